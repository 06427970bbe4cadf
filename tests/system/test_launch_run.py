"""`python launch/cluster.py` as a user runs it, briefly: it ends by itself, prints one JSON line,
and leaves summary.json, the learning curve and a checkpoint in its run directory, and no browser
behind; `resume=auto` then continues from that checkpoint, its replay included."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from buffer.durability.snapshot import load_snapshot
from launch.curve import moving_mean
from tests.support.chromium_processes import flywheel_browsers

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(900)


def test_moving_mean_over_the_last_window():
    np.testing.assert_allclose(moving_mean([1, 0, 1, 1, 0], 2), [1.0, 0.5, 0.5, 1.0, 0.5])
    np.testing.assert_allclose(moving_mean([True, False, True], 10), [1.0, 0.5, 2 / 3])
    assert moving_mean([], 5).size == 0


def _run(run_dir: Path, minutes: float, *overrides: str) -> dict:
    cmd = [sys.executable, "launch/cluster.py", "+exp=webgym", f"run.dir={run_dir}", f"run.max_minutes={minutes}",
           "run.progress_every_s=5", "cluster.dashboard=false", "logger.wandb.enabled=false",
           "rollout.slots=2", "learner.batch_size=8", "learner.min_replay_steps=4", "learner.sync_every=3",
           *overrides]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not flywheel_browsers(), "a browser outlived the run"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_short_run_ends_with_its_summary_and_curve_and_a_resume_starts_from_its_replay():
    runs = Path(tempfile.mkdtemp(prefix="fwrun", dir="/tmp"))  # Ray's socket paths must stay short
    try:
        last = _run(runs / "a", 1, "checkpoint.every=0")  # one checkpoint, at the end, however fast the box
        assert last["episodes"] > 0 and last["learner_step"] > 0 and last["weight_updates"] > 0
        assert last["replay_restored"] == 0
        summary = json.loads((runs / "a" / "summary.json").read_text())
        assert len(summary["outcomes"]) == summary["episodes"] == last["episodes"]
        assert summary["losses"] and all(step > 0 for step, _ in summary["losses"])
        assert (runs / "a" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        (checkpoint,) = (runs / "a" / "checkpoints").glob("step-*")  # the one taken at the end
        assert checkpoint.name == f"step-{last['learner_step']:08d}"
        saved = load_snapshot(checkpoint / "replay" / "shard-0.snap")  # a shard's snapshot inside it
        assert saved is not None and 0 < len(saved[1]) <= last["replay_trajectories"]
        resumed = _run(runs / "b", 0.3, "resume=auto")
        assert resumed["replay_restored"] == len(saved[1])
        assert resumed["learner_step"] > last["learner_step"]
    finally:
        shutil.rmtree(runs, ignore_errors=True)


def test_resumed_shards_start_from_their_own_files_or_route_every_old_file(tmp_path):
    from launch.cluster import replay_restore

    (tmp_path / "replay").mkdir()
    for i in range(11):
        (tmp_path / "replay" / f"shard-{i}.snap").write_bytes(b"")
    files = [str(tmp_path / "replay" / f"shard-{i}.snap") for i in range(11)]
    cfg = OmegaConf.create({"buffer": {"shards": 11}, "checkpoint": {"replay": True}})
    assert replay_restore(cfg, str(tmp_path)) == [{"restore_from": f} for f in files]  # shard-10 is not 2nd
    cfg.buffer.shards = 3
    assert replay_restore(cfg, str(tmp_path)) == [{"restore_from": files, "route": (i, 3)} for i in range(3)]
    cfg.checkpoint.replay = False
    assert replay_restore(cfg, str(tmp_path)) == [{}, {}, {}]
    cfg.checkpoint.replay = True
    (tmp_path / "replay" / "shard-4.snap").unlink()
    with pytest.raises(ValueError, match="a shard's replay is missing"):
        replay_restore(cfg, str(tmp_path))


def test_ray_keeps_its_session_in_the_run_dir_unless_its_socket_paths_would_be_too_long(tmp_path):
    from launch.cluster import ray_temp_dir

    short = Path(tempfile.mkdtemp(prefix="fwr", dir="/tmp"))
    deep = tmp_path / ("d" * 60) / "run"
    deep.mkdir(parents=True)
    try:
        assert ray_temp_dir(str(short)) == str(short / "ray")
        temp = ray_temp_dir(str(deep))
        assert len(temp) + len("/session_2026-11-29_23-16-49_896891_4194304/sockets/plasma_store") <= 107
        assert os.path.realpath(deep / "ray") == os.path.realpath(temp)  # the run's logs are found there
        assert ray_temp_dir(str(deep)) == temp  # the same run again: the same place
    finally:
        shutil.rmtree(short, ignore_errors=True)
        shutil.rmtree(os.path.realpath(deep / "ray"), ignore_errors=True)
