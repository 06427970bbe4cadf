"""The sending half of the bucketed weight protocol: learner rank 0 broadcasts buckets with a version.

`BucketBroadcaster` packs named tensors into the buckets of its layout (weights/buckets.py) and
broadcasts a header [version, n_buckets] then every bucket on a process group; the receiving
half is weights/receiver.py. It knows nothing of actors: the senders that tell the actors to
join (weights/full_sender.py, weights/lora_sender.py) use it.

Every broadcast is started asynchronously and waited for at the end, so packing bucket k+1
overlaps the transfer of bucket k (gloo runs its collectives on background threads, NCCL on its
stream, both in the order they were started).

NOT guaranteed: that the receivers are there (a broadcast with a missing peer fails, or waits
for the group's timeout); that names, shapes and dtypes passed to `send` match the layout built
at construction (a changed model needs a new broadcaster).
"""

from __future__ import annotations

import torch

from weights.buckets import Bucket, build_layout, pack


class BucketBroadcaster:
    def __init__(self, group, named_params: dict[str, torch.Tensor], bucket_bytes: int, device: str = "cpu",
                 own_bytes: int = 1 << 20):
        self.group = group
        self.device = device
        self.layout: list[Bucket] = build_layout(
            [(n, tuple(p.shape), p.dtype) for n, p in named_params.items()], bucket_bytes, own_bytes)
        # Reused across syncs: allocating fresh buffers every time costs page faults. A bucket of
        # one contiguous tensor is sent from the tensor itself and needs none.
        self._flat = [None if self._direct(b, named_params) else
                      torch.empty(b.numel, dtype=b.torch_dtype, device=device) for b in self.layout]

    @staticmethod
    def _direct(bucket: Bucket, named_params: dict[str, torch.Tensor]) -> bool:
        if len(bucket.entries) != 1:
            return False
        t = named_params[bucket.entries[0].name]
        return t.is_contiguous() and t.dtype == bucket.torch_dtype

    def send(self, named_params: dict[str, torch.Tensor], version: int) -> int:
        """Broadcast every bucket; returns the bytes sent. Receivers must be in `receive`. The
        tensors must not change until this returns (their storage may be in flight)."""
        header = torch.tensor([version, len(self.layout)], dtype=torch.int64, device=self.device)
        works = [self.group.broadcast(header, 0)]
        sent = 0
        with torch.no_grad():
            try:
                for bucket, out in zip(self.layout, self._flat):
                    flat = pack(bucket, named_params, out=out)
                    works.append(self.group.broadcast(flat, 0))
                    sent += flat.numel() * flat.element_size()
            finally:
                for work in works:  # even after an error: never return with buffers in flight
                    work.wait()
        return sent
