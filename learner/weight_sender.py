"""The sending half of the weight protocol: learner rank 0 broadcasts buckets with a version."""

from __future__ import annotations

import torch

from learner.weight_buckets import Bucket, build_layout, pack


class WeightSender:
    def __init__(self, group, named_params: dict[str, torch.Tensor], bucket_bytes: int, device: str = "cpu"):
        self.group = group
        self.device = device
        self.layout: list[Bucket] = build_layout(
            [(n, tuple(p.shape), p.dtype) for n, p in named_params.items()], bucket_bytes)
        # Reused across syncs: allocating fresh buffers every time costs page faults.
        self._flat = [torch.empty(b.numel, dtype=b.torch_dtype, device=device) for b in self.layout]

    def send(self, named_params: dict[str, torch.Tensor], version: int) -> int:
        """Broadcast every bucket; returns the bytes sent. Receivers must be in `receive`."""
        header = torch.tensor([version, len(self.layout)], dtype=torch.int64, device=self.device)
        self.group.broadcast(header, 0).wait()
        sent = 0
        with torch.no_grad():
            for bucket, flat in zip(self.layout, self._flat):
                pack(bucket, named_params, out=flat)
                self.group.broadcast(flat, 0).wait()
                sent += flat.numel() * flat.element_size()
        return sent
