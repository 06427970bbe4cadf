"""Learner snapshots: kill -9 after a snapshot, resume, and the next losses are bit-identical;
an unfinished snapshot is never picked; only the newest K are kept."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learner.checkpoint import MARKER, complete_checkpoints, latest_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def run_child(mode: str, work: Path, device: str = "cpu", zero_stage: int = 1) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)  # keep the caller's
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": device, "PYTHONPATH": path}
    cmd = [sys.executable, str(ROOT / "tests/support/checkpoint_child.py"), mode, str(work), device, str(zero_stage)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def losses(proc: subprocess.CompletedProcess) -> list[str]:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("LOSSES ")]
    assert lines, f"no losses printed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    return lines[-1].split()[1:]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])])
def test_kill_then_resume_gives_bit_identical_next_losses(tmp_path, device):
    trained = run_child("train", tmp_path, device)
    assert trained.returncode == -signal.SIGKILL
    resumed = run_child("resume", tmp_path, device)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = losses(trained), losses(resumed)
    assert got == expected  # step 4 checks the weights, step 5 the optimizer and scheduler state
    snap = latest_checkpoint(tmp_path / "checkpoints")
    assert snap.name == "step-00000003"
    assert (snap / "hf" / "model.safetensors").exists() and (snap / "hf" / "tokenizer.json").exists()


def test_a_zero3_snapshot_resumes_bit_identically_and_exports_the_whole_model(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    trained = run_child("train", tmp_path, zero_stage=3)
    assert trained.returncode == -signal.SIGKILL, trained.stderr[-3000:]
    resumed = run_child("resume", tmp_path, zero_stage=3)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert losses(resumed) == losses(trained)
    hf = latest_checkpoint(tmp_path / "checkpoints") / "hf"
    saved = load_file(hf / "model.safetensors")
    whole = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(hf)).state_dict()
    # ZeRO-3 leaves each rank an empty tensor per partitioned parameter outside a gather
    assert set(saved) == set(whole) - {"lm_head.weight"}  # tied to the embeddings: saved once
    assert {k: tuple(v.shape) for k, v in saved.items()} == {k: tuple(whole[k].shape) for k in saved}
    assert all(v.numel() > 0 for v in saved.values())


def fake_snapshot(root: Path, step: int, complete: bool = True) -> Path:
    p = root / (f"step-{step:08d}" if complete else f".tmp-step-{step:08d}")
    p.mkdir(parents=True)
    if complete:
        (p / MARKER).write_text(p.name)
    return p


def test_unfinished_snapshots_are_never_picked(tmp_path):
    done = fake_snapshot(tmp_path, 10)
    fake_snapshot(tmp_path, 20, complete=False)  # a crash mid-snapshot
    (tmp_path / "step-00000030").mkdir()  # renamed but no marker: not a snapshot either
    assert complete_checkpoints(tmp_path) == [done]
    assert latest_checkpoint(tmp_path) == done
    assert latest_checkpoint(tmp_path / "missing") is None


def test_latest_across_runs_is_the_most_recent(tmp_path):
    old = fake_snapshot(tmp_path / "run-a" / "checkpoints", 900)
    new = fake_snapshot(tmp_path / "run-b" / "checkpoints", 20)
    os.utime(old / MARKER, ns=(1, 1))
    assert latest_checkpoint([tmp_path / "run-a" / "checkpoints", tmp_path / "run-b" / "checkpoints"]) == new
