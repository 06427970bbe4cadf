"""The receiving half of the weight protocol (the only part of learner/ that actors/ imports).

One sync: a header [policy_version, n_buckets] (int64), then each bucket's flat buffer, all
broadcast from rank 0. The layout travels beforehand over the control plane.
"""

from __future__ import annotations

import torch

from learner.weight_buckets import Bucket, unpack


class WeightReceiver:
    def __init__(self, group, device: str = "cpu"):
        self.group = group
        self.device = device

    def receive(self, layout: list[Bucket], expected_version: int) -> list[tuple[str, torch.Tensor]]:
        """Receive one sync in full and return (name, tensor) pairs for the engine to load.
        Everything is received before anything is loaded, so a failed load never leaves the
        group mid-broadcast."""
        header = torch.zeros(2, dtype=torch.int64, device=self.device)
        self.group.broadcast(header, 0).wait()
        version, n_buckets = (int(x) for x in header.tolist())
        if version != expected_version or n_buckets != len(layout):
            raise RuntimeError(f"weight sync header says version {version} with {n_buckets} buckets, "
                               f"control plane said version {expected_version} with {len(layout)}")
        named = []
        for bucket in layout:
            flat = torch.empty(bucket.numel, dtype=bucket.torch_dtype, device=self.device)
            self.group.broadcast(flat, 0).wait()
            named.extend(unpack(bucket, flat))
        return named
