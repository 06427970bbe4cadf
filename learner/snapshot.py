"""Learner snapshots: DeepSpeed checkpoint + HF-format model + learner state, atomic, last K kept.

Layout of one snapshot, `<root>/step-00000420/`:
    deepspeed/   engine.save_checkpoint (weights, optimizer, scheduler) under tag "ckpt"
    hf/          the model in HF format (safetensors) with its tokenizer: loadable on its own
    learner_state.pt   step, policy_version, counters, torch / numpy / python RNG states
    COMPLETE     written last; a directory without it is not a snapshot

Atomic: everything is written under `.tmp-step-…` and renamed into place, so a crash
mid-snapshot leaves the previous snapshot as the newest complete one.
NOT guaranteed: the replay shards' contents (they persist themselves); identical resumes across
different torch / DeepSpeed versions.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import torch

MARKER = "COMPLETE"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_snapshot(root: str | os.PathLike, engine, tokenizer, state: dict, *, keep: int) -> Path:
    """Write a snapshot of `engine` (a DeepSpeed engine) at `state["step"]`; keep the newest `keep`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{int(state['step']):08d}"
    tmp, final = root / f".tmp-{name}", root / name
    shutil.rmtree(tmp, ignore_errors=True)
    engine.save_checkpoint(str(tmp / "deepspeed"), tag="ckpt")
    engine.module.save_pretrained(tmp / "hf", safe_serialization=True)
    tokenizer.save_pretrained(tmp / "hf")
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    torch.save({**state, "rng": rng}, tmp / "learner_state.pt")
    (tmp / MARKER).write_text(name)
    _fsync_dir(tmp)
    if final.exists():  # a re-snapshot of the same step replaces the old one
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    for old in complete_snapshots(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_snapshots(root: str | os.PathLike) -> list[Path]:
    """Complete snapshots under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / MARKER).exists())


def latest_snapshot(roots) -> Path | None:
    """The most recently completed snapshot among one or several snapshot roots."""
    found = [p for r in ([roots] if isinstance(roots, (str, os.PathLike)) else roots)
             for p in complete_snapshots(r)]
    return max(found, key=lambda p: (p / MARKER).stat().st_mtime_ns, default=None)


def load_snapshot(path: str | os.PathLike, engine) -> dict:
    """Restore `engine` (same model and config as when saved) and the RNG states; return the state."""
    path = Path(path)
    if not (path / MARKER).exists():
        raise FileNotFoundError(f"{path} is not a complete snapshot (no {MARKER} marker)")
    loaded, _ = engine.load_checkpoint(str(path / "deepspeed"), tag="ckpt",
                                       load_optimizer_states=True, load_lr_scheduler_states=True)
    if loaded is None:
        raise RuntimeError(f"DeepSpeed could not load the checkpoint in {path / 'deepspeed'}")
    state = torch.load(path / "learner_state.pt", weights_only=False)
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    return state

