"""DeepSpeed for one learner rank: distributed env, the JSON config with overrides, initialize."""

from __future__ import annotations

import contextlib
import json
import os

from learner.config import SCHEDULES
from weights.group import free_port  # the DeepSpeed master's port is picked as the weight store's

__all__ = ["SCHEDULES", "free_port", "full_parameters", "init_rank", "initialize", "load_config", "param_count"]




def load_config(path: str, *, micro_batch: int, grad_accum: int, lr: float, zero_stage: int,
                grad_clip: float, warmup_steps: int, schedule: str = "constant_with_warmup",
                total_steps: int | None = None, min_lr_ratio: float = 0.0) -> dict:
    """The JSON file under configs/deepspeed/, with the fields our Hydra config owns set.
    schedule: constant_with_warmup (DeepSpeed's WarmupLR: linear warm-up, then constant) or
    cosine (WarmupCosineLR: warm-up, then cosine decay to min_lr_ratio × lr at total_steps)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"learner.schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "cosine" and not total_steps:
        raise ValueError("learner.schedule=cosine needs learner.total_steps > 0")
    with open(path) as f:
        cfg = json.load(f)
    cfg["train_micro_batch_size_per_gpu"] = micro_batch
    cfg["gradient_accumulation_steps"] = grad_accum
    cfg.pop("train_batch_size", None)  # derived by DeepSpeed from the two above and world size
    cfg.setdefault("zero_optimization", {})["stage"] = zero_stage
    cfg["gradient_clipping"] = grad_clip
    cfg.setdefault("optimizer", {"type": "AdamW", "params": {}})["params"]["lr"] = lr
    if schedule == "cosine":
        cfg["scheduler"] = {"type": "WarmupCosineLR", "params": {
            "total_num_steps": int(total_steps), "warmup_num_steps": warmup_steps,
            "warmup_min_ratio": 0.0, "cos_min_ratio": min_lr_ratio}}
    else:
        sched = cfg.setdefault("scheduler", {"type": "WarmupLR", "params": {}})
        sched["params"].update(warmup_max_lr=lr, warmup_num_steps=warmup_steps)
    return cfg


def init_rank(rank: int, world_size: int, master_addr: str, master_port: int, backend: str) -> None:
    """Set the env DeepSpeed reads (else it asks for mpi4py) and start its process group."""
    os.environ.update(RANK=str(rank), LOCAL_RANK="0", WORLD_SIZE=str(world_size),
                      MASTER_ADDR=master_addr, MASTER_PORT=str(master_port))
    if backend == "gloo":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import deepspeed.ops

    if backend == "gloo":
        # DeepSpeed builds its shared-memory comm op (a ~2 min C++ compile, and a process killed
        # mid-compile leaves a lock that hangs later runs) whenever it deems it compatible. gloo
        # does the same work without it at our sizes.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)


def initialize(model, ds_config: dict):
    import deepspeed

    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_config)
    return engine, scheduler


@contextlib.contextmanager
def full_parameters(engine, module):
    """`module`'s parameters whole on every rank for the duration: ZeRO-3 partitions them (each
    holds an empty tensor outside this). Collective under ZeRO-3: every rank must enter."""
    if engine.zero_optimization_stage() != 3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        yield


def param_count(module, trainable_only: bool = False) -> int:
    """Parameters of `module`, whole even where ZeRO-3 has partitioned them (ds_numel)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters()
               if p.requires_grad or not trainable_only)
