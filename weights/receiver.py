"""The receiving half of the bucketed weight protocol (with weights/group.py, what actors/ imports).

One sync: a header [policy_version, n_buckets] (int64), then each bucket's flat buffer, all
broadcast from rank 0 by a BucketBroadcaster (weights/broadcast.py). The layout travels
beforehand over the control plane (the actor's `update_weights` / `update_adapter` call).

Every bucket's receive is started at once, into buffers allocated once per layout and reused,
and the buckets are handed out in order as each arrives, so the engine loads bucket k while
bucket k+1 is still on the wire.

NOT guaranteed: the tensors handed out stay valid only until the next sync with the same
layout (they are views into the reused buffers; the engine copies them when it loads).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from weights.buckets import Bucket, unpack


class WeightReceiver:
    def __init__(self, group, device: str = "cpu"):
        self.group = group
        self.device = device
        # One layout's buffers: a full model's sync reuses them every time; a LoRA policy's
        # one-off base sync gives its buffers up at the first adapter sync.
        self._key: tuple | None = None
        self._buffers: list[torch.Tensor] = []

    def _buffers_for(self, layout: list[Bucket]) -> list[torch.Tensor]:
        key = tuple((b.dtype, b.numel) for b in layout)
        if key != self._key:
            self._buffers = []  # free the old ones before allocating
            self._buffers = [torch.empty(b.numel, dtype=b.torch_dtype, device=self.device) for b in layout]
            self._key = key
        return self._buffers

    @contextmanager
    def stream(self, layout: list[Bucket], expected_version: int) -> Iterator[Iterator[tuple[str, torch.Tensor]]]:
        """Join one sync; yields an iterator of (name, tensor) pairs, bucket by bucket as each
        arrives. Leaving the block waits for every bucket, even when the consumer stopped early
        or failed, so a failed load never leaves the group mid-broadcast."""
        header = torch.zeros(2, dtype=torch.int64, device=self.device)
        self.group.broadcast(header, 0).wait()
        version, n_buckets = (int(x) for x in header.tolist())
        if version != expected_version or n_buckets != len(layout):
            raise RuntimeError(f"weight sync header says version {version} with {n_buckets} buckets, "
                               f"control plane said version {expected_version} with {len(layout)}")
        buffers = self._buffers_for(layout)
        works = [self.group.broadcast(flat, 0) for flat in buffers]

        def arrivals():
            for bucket, flat, work in zip(layout, buffers, works):
                work.wait()
                yield from unpack(bucket, flat)

        try:
            yield arrivals()
        finally:
            for work in works:
                work.wait()

    def receive(self, layout: list[Bucket], expected_version: int) -> list[tuple[str, torch.Tensor]]:
        """Receive one sync in full and return its (name, tensor) pairs."""
        with self.stream(layout, expected_version) as named:
            return list(named)
