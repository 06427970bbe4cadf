"""kill -9 of a shard process mid-ingest, then a restart on the same address: every acknowledged
trajectory comes back (count and content), with its priority; the client resends what was not
acknowledged and each trajectory ends up stored exactly once."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from buffer.net.insert_client import InsertClient
from buffer.net.sample_client import SampleClient
from tests.support.trajectories import assert_same_trajectory, make_trajectory

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]


class ShardProcess:
    def __init__(self, data_dir: Path, port: int = 0, config: dict | None = None):
        cmd = [sys.executable, "-m", "buffer", "--port", str(port), "--data-dir", str(data_dir)]
        cmd += ["--capacity", "100000", "--config", json.dumps(config or {})]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        assert line and line[0] == "address", f"shard process did not start: {line}"
        self.address = line[1]
        self.port = int(self.address.rsplit(":", 1)[1])

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.proc.stdout.close()


@pytest.fixture
def shard_process(tmp_path):
    """Starts a ShardProcess on tmp_path (stopped at the end of the test)."""
    started: list[ShardProcess] = []

    def start(**kwargs) -> ShardProcess:
        started.append(ShardProcess(tmp_path, **kwargs))
        return started[-1]

    yield start
    for p in started:
        p.stop()


def test_kill_9_mid_ingest_loses_no_acknowledged_trajectory(tmp_path, shard_process):
    rng = np.random.default_rng(90)
    config = {"alpha": 1.0, "snapshot_every_inserts": 60, "snapshot_every_s": None}
    first = shard_process(config=config)
    trajs = [make_trajectory(rng) for _ in range(400)]
    by_id = {t.traj_id: t for t in trajs}
    ic = InsertClient(first.address, window=32, timeout_s=60)
    sc = SampleClient(first.address, timeout_s=30)
    try:
        for t in trajs[:150]:
            ic.insert(t)
        ic.flush()
        # Priority updates, acknowledged (hence logged) before the kill.
        items = sc.sample(64)
        keys = [it["key"] for it in items]
        reply = sc.update_priorities(keys, np.arange(1, len(keys) + 1, dtype=float))
        assert reply["updated"] >= 1 and reply["stale"] == 0, reply
        before = sc.get([t.traj_id for t in trajs[:150]])
        assert len(before) == 150
        assert any((p != 1.0).any() for _, p in before.values())  # the updates took: not all defaults
        for t in trajs[150:300]:  # keep the window full...
            ic.insert(t)
        first.kill9()  # ...and kill the shard while inserts are in flight
        ic.poll()
        acked = {tid for tid, r in ic.acks.items() if r["status"] == "stored"}
        assert len(acked) >= 150
        unacked_at_kill = ic.in_flight  # sent, never acknowledged: may or may not be stored

        shard_process(port=first.port, config=config)  # a second process on the same address
        restored = sc.get(sorted(by_id))
        # Every acknowledged trajectory is back, with the same content...
        assert acked <= set(restored)
        for tid, (traj, prios) in restored.items():
            assert_same_trajectory(by_id[tid], traj)
            assert len(prios) == len(traj.steps)
        # ...and the same priorities as before the kill.
        for tid, (_, prios_before) in before.items():
            np.testing.assert_array_equal(restored[tid][1], prios_before)

        # The client resends what was not acknowledged; the rest of the stream goes on.
        for t in trajs[300:]:
            ic.insert(t)
        ic.flush(60)
        assert ic.reconnects >= 1 and ic.resends >= unacked_at_kill
        final = sc.get(sorted(by_id))
        assert set(final) == set(by_id)  # all 400, each stored once
        info = sc.info()
        assert info["size_steps"] == sum(len(t.steps) for t in trajs)
    finally:
        ic.close()
        sc.close()


def test_kill_9_keeps_every_sample_the_rate_limiter_allowed(tmp_path, shard_process):
    """Samples are logged like inserts: after kill -9 the limiter's sample count is what the
    learner was handed, both from the snapshot header and from the log records after it."""
    rng = np.random.default_rng(91)
    config = {"samples_per_insert": 2.0, "min_size_to_sample": 8, "error_buffer": 4000, "snapshot_every_s": None}
    first = shard_process(config=config)
    ic = InsertClient(first.address, window=16, timeout_s=60)
    sc = SampleClient(first.address, timeout_s=30)
    try:
        for _ in range(40):
            ic.insert(make_trajectory(rng))
        ic.flush()
        for _ in range(3):
            assert len(sc.sample(16)) == 16
        assert sc.snapshot()
        for _ in range(50):  # bounded wait for the snapshot file (not a timing assertion)
            if list(tmp_path.glob("snapshot-*.snap")):
                break
            sc.stats()
        assert list(tmp_path.glob("snapshot-*.snap"))
        for _ in range(4):
            assert len(sc.sample(8)) == 8  # these are only in the log
        before = sc.stats()
        assert before["limiter"]["samples"] == before["samples"] == 3 * 16 + 4 * 8
        first.kill9()

        shard_process(port=first.port, config=config)
        after = sc.stats()
        assert after["samples"] == before["samples"]
        for key in ("samples", "inserts", "deletes", "diff"):
            assert after["limiter"][key] == before["limiter"][key], key
    finally:
        ic.close()
        sc.close()


def test_a_request_lost_with_a_killed_shard_is_sent_again_when_it_is_back(tmp_path, shard_process):
    """The learner's sample request waits in the shard (rate limited) when the shard is killed;
    the restarted shard never saw it, so the client asks again once the connection is back."""
    rng = np.random.default_rng(92)
    first = shard_process(config={"samples_per_insert": 1.0, "min_size_to_sample": 1000,
                                  "snapshot_every_s": None})
    ic = InsertClient(first.address, window=16, timeout_s=60)
    sc = SampleClient(first.address, timeout_s=60)
    try:
        for _ in range(10):
            ic.insert(make_trajectory(rng))
        ic.flush()
        req = sc.request(b"sample", SampleClient.sample_body(4, timeout_ms=120_000))  # waits: 10 < 1000 stored
        with SampleClient(first.address, timeout_s=30) as watcher:
            for _ in range(200):  # bounded: until the shard holds the request (not a timing assertion)
                if watcher.stats()["blocked_samples"]:
                    break
            assert watcher.stats()["blocked_samples"] >= 1
        first.kill9()  # the request dies with the process
        shard_process(port=first.port, config={"snapshot_every_s": None})
        reply = sc.reply(req, "sample")
        assert reply["status"] == "ok" and len(reply["items"]) == 4
        assert sc.resends == 1
    finally:
        ic.close()
        sc.close()
