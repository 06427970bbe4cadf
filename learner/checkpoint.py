"""Learner checkpoints: DeepSpeed checkpoint + HF-format model + learner state, atomic, last K kept.

Layout of one checkpoint, `<root>/step-00000420/`:
    deepspeed/   engine.save_checkpoint (weights, optimizer, scheduler) under tag "ckpt"
    hf/          the model in HF format (safetensors) with its tokenizer: loadable on its own;
                 for a LoRA policy its PEFT adapter (adapter_model.safetensors, adapter_config.json)
    learner_state.pt   step, policy_version, counters, torch (CPU and CUDA) / numpy / python RNG states
                       (rank k > 0 of a multi-rank learner: learner_state.rank<k>.pt)
    replay/shard-<i>.snap   each replay shard's trajectories, priorities, counters and rate-limiter
                       state (buffer/durability/snapshot.py format), unless `checkpoint.replay` is off
    COMPLETE     written last; a directory without it is not a checkpoint

Atomic: everything is written under `.tmp-step-…` and renamed into place, so a crash
mid-checkpoint leaves the previous checkpoint as the newest complete one.
NOT guaranteed: one consistent cut of the replay and the learner (actors go on inserting while the
shards write, each shard at its own moment); identical resumes across different torch /
DeepSpeed versions.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from learner.deepspeed_setup import full_parameters

MARKER = "COMPLETE"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _state_file(rank: int) -> str:
    return "learner_state.pt" if rank == 0 else f"learner_state.rank{rank}.pt"


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def save_checkpoint(root: str | os.PathLike, engine, policy, tokenizer, state: dict, *, keep: int,
                  rank: int = 0, extra: Callable[[Path], None] | None = None) -> Path:
    """Write a checkpoint of `engine` (a DeepSpeed engine) at `state["step"]`; keep the newest `keep`.
    `policy` is the HF model the actors serve (the engine's module, or the LM inside it); a
    peft model saves its adapter alone. `extra(directory)` (rank 0) writes whatever else belongs
    in the checkpoint, before it is marked complete.
    Collective over the learner ranks: each writes its DeepSpeed shard and its own state (RNG
    streams); rank 0 the model and the marker, after every rank is done."""
    root = Path(root)
    name = f"step-{int(state['step']):08d}"
    tmp, final = root / f".tmp-{name}", root / name
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    _barrier()
    engine.save_checkpoint(str(tmp / "deepspeed"), tag="ckpt")
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
           "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}  # dropout on GPUs
    torch.save({**state, "rng": rng}, tmp / _state_file(rank))
    _barrier()
    with full_parameters(engine, policy):  # under ZeRO-3 rank 0 alone would save empty tensors
        if rank == 0:
            policy.save_pretrained(tmp / "hf", safe_serialization=True)
    if rank == 0:
        tokenizer.save_pretrained(tmp / "hf")
        if extra is not None:
            extra(tmp)
        (tmp / MARKER).write_text(name)
        _fsync_dir(tmp)
        if final.exists():  # a second checkpoint of the same step replaces the old one
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        for old in complete_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def save_replay(shards: list, directory: Path, timeout_s: float) -> dict:
    """Every replay shard (Ray handles, in shard order) writes what it holds to
    `directory/replay/shard-<i>.snap`. A shard that fails, or does not answer within `timeout_s`,
    costs the checkpoint its replay, not the run: no file is left, and a resume from the checkpoint
    starts from an empty replay. Returns {"trajectories", "seconds"} or {"error"}."""
    import ray

    replay = directory / "replay"
    replay.mkdir()
    try:
        written = ray.get([s.export_snapshot.remote(str(replay / f"shard-{i}.snap")) for i, s in enumerate(shards)],
                          timeout=timeout_s)
    except ray.exceptions.RayError as err:  # GetTimeoutError included
        shutil.rmtree(replay, ignore_errors=True)
        return {"error": f"{type(err).__name__}: {err}"}
    return {"trajectories": sum(w["trajectories"] for w in written), "seconds": max(w["seconds"] for w in written)}


def complete_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / MARKER).exists())


def latest_checkpoint(roots) -> Path | None:
    """The most recently completed checkpoint among one or several checkpoint roots."""
    found = [p for r in ([roots] if isinstance(roots, (str, os.PathLike)) else roots)
             for p in complete_checkpoints(r)]
    return max(found, key=lambda p: (p / MARKER).stat().st_mtime_ns, default=None)


def load_checkpoint(path: str | os.PathLike, engine, *, rank: int = 0) -> dict:
    """Restore `engine` (same model and config as when saved) and the RNG states; return the state."""
    path = Path(path)
    if not (path / MARKER).exists():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {MARKER} marker)")
    loaded, _ = engine.load_checkpoint(str(path / "deepspeed"), tag="ckpt",
                                       load_optimizer_states=True, load_lr_scheduler_states=True)
    if loaded is None:
        raise RuntimeError(f"DeepSpeed could not load the checkpoint in {path / 'deepspeed'}")
    state = torch.load(path / _state_file(rank), weights_only=False)
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"].get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    random.setstate(state["rng"]["python"])
    return state


def checkpoint_state(path: str | os.PathLike) -> dict:
    """Rank 0's learner state of a complete checkpoint, without a DeepSpeed engine (for launch/)."""
    return torch.load(Path(path) / _state_file(0), weights_only=False)
