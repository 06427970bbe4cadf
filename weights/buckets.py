"""Bucket layout of the weight plane: parameters packed into a few flat buffers, one dtype each.

A broadcast of a handful of large flat buffers costs far less than one broadcast per parameter
(each collective has a fixed latency). A tensor of at least `own_bytes` is already big enough to
amortise that latency, so it gets a bucket of its own: the sender broadcasts its storage as it
is, with no copy into a flat buffer. The layout is a plain table, sent over the control plane
(Ray) once, so the receiving side can allocate its buffers and cut them back into named views.

NOT guaranteed: a layout stays valid only while the parameter names, shapes and dtypes it was
built from stay the same; a receiver checks the total size of every bucket it receives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Entry:
    name: str
    shape: tuple[int, ...]
    offset: int  # in elements, within its bucket
    numel: int


@dataclass
class Bucket:
    dtype: str  # e.g. "float32"; strings keep the layout free of torch objects on the wire
    numel: int = 0
    entries: list[Entry] = field(default_factory=list)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def build_layout(named_shapes: list[tuple[str, tuple[int, ...], torch.dtype]],
                 bucket_bytes: int = 256 << 20, own_bytes: int = 1 << 20) -> list[Bucket]:
    """Group parameters by dtype, in the given order, into buckets of at most `bucket_bytes`;
    a parameter of at least `own_bytes` (or larger than `bucket_bytes`) gets a bucket of its own.
    Buckets come in the order their first parameter does, so a receiver loading bucket by bucket
    completes the model's layers in order."""
    open_bucket: dict[str, Bucket] = {}
    buckets: list[Bucket] = []
    for name, shape, dtype in named_shapes:
        key = str(dtype).removeprefix("torch.")
        numel = 1
        for d in shape:
            numel *= int(d)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if numel * itemsize >= own_bytes:
            buckets.append(Bucket(dtype=key, numel=numel, entries=[Entry(name, tuple(int(d) for d in shape), 0, numel)]))
            continue
        bucket = open_bucket.get(key)
        if bucket is None or (bucket.numel and (bucket.numel + numel) * itemsize > bucket_bytes):
            bucket = Bucket(dtype=key)
            open_bucket[key] = bucket
            buckets.append(bucket)
        bucket.entries.append(Entry(name, tuple(int(d) for d in shape), bucket.numel, numel))
        bucket.numel += numel
    return buckets


def pack(bucket: Bucket, tensors: dict[str, torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """The bucket as one flat buffer: the tensor itself (flattened, no copy) for a bucket of one
    contiguous tensor, else a copy of its tensors into `out` (a new buffer when not given)."""
    if len(bucket.entries) == 1:
        t = tensors[bucket.entries[0].name].detach()
        if t.is_contiguous() and t.dtype == bucket.torch_dtype:
            return t.reshape(-1)
    if out is None:
        device = tensors[bucket.entries[0].name].device
        out = torch.empty(bucket.numel, dtype=bucket.torch_dtype, device=device)
    for e in bucket.entries:
        out[e.offset:e.offset + e.numel].copy_(tensors[e.name].detach().reshape(-1))
    return out


def unpack(bucket: Bucket, flat: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Named views into a received flat buffer (no copies)."""
    if flat.numel() != bucket.numel:
        raise ValueError(f"weight bucket of {flat.numel()} elements, layout says {bucket.numel}")
    return [(e.name, flat[e.offset:e.offset + e.numel].view(e.shape)) for e in bucket.entries]
