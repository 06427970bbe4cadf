"""ShardActor hosted by a real local Ray: control over Ray, data over ZMQ."""

import shutil
import tempfile

import numpy as np
import pytest
import ray

from buffer.core.config import ReplayConfig
from buffer.net.directory import ShardDirectory
from buffer.net.insert_client import InsertClient
from buffer.net.sample_client import SampleClient
from buffer.shard_actor import ShardActor
from tests.support.trajectories import make_trajectory

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def ray_cluster():
    # Short path: Ray puts unix sockets under the temp dir (107-byte limit).
    temp_dir = tempfile.mkdtemp(prefix="fwray", dir="/tmp")
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    yield
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_shard_actor_under_ray(ray_cluster):
    rng = np.random.default_rng(3)
    actor_cls = ray.remote(num_cpus=0)(ShardActor)
    shard = actor_cls.options(name="flywheel:shard-0").remote(0, "127.0.0.1", 0, ReplayConfig(capacity=5, success_only=True))
    try:
        address = ray.get(shard.address.remote(), timeout=60)
        assert address.startswith("tcp://127.0.0.1:")
        trajs = [make_trajectory(rng, success=i % 2 == 0) for i in range(8)]
        with InsertClient(address, window=3, timeout_s=30) as client:
            for t in trajs:
                client.insert(t)
            client.insert(b"\xc1")
            client.flush()
        kept = [t.traj_id for t in trajs if t.success]  # 4 successes, capacity 5: none evicted
        assert ray.get(shard.traj_ids.remote(), timeout=30) == kept
        stats = ray.get(shard.stats.remote(), timeout=30)
        assert stats["shard_id"] == 0 and stats["serving"]
        assert stats["inserts"] == 9 and stats["stored"] == 4
        assert stats["filtered"] == {"success_only": 4}
        assert stats["rejected"] == {"bad_msgpack": 1}
        assert stats["size_steps"] == sum(len(t.steps) for t in trajs if t.success)
        with SampleClient(address, timeout_s=30) as sc:
            assert {it["traj_id"] for it in sc.sample(50)} <= set(kept)
        assert ray.get(shard.stats.remote(), timeout=30)["samples"] == 50
        ray.get(shard.stop.remote(), timeout=30)
        assert not ray.get(shard.stats.remote(), timeout=30)["serving"]
    finally:
        ray.kill(shard)


def test_durable_prioritized_shard_actor_survives_a_kill(ray_cluster, tmp_path):
    rng = np.random.default_rng(4)
    actor_cls = ray.remote(num_cpus=0)(ShardActor)
    replay = ReplayConfig(capacity=100, alpha=1.0, beta=0.5, recency_gamma=0.9, data_dir=str(tmp_path),
                          snapshot_every_s=None)
    first = actor_cls.remote(1, "127.0.0.1", 0, replay)
    second = None
    try:
        address = ray.get(first.address.remote(), timeout=60)
        trajs = [make_trajectory(rng) for _ in range(12)]
        with InsertClient(address, window=4, timeout_s=30) as client:
            for t in trajs[:8]:
                client.insert(t)
            client.flush()
            assert ray.get(first.snapshot.remote(wait_s=30), timeout=60) is True
            for t in trajs[8:]:
                client.insert(t)
            client.flush()
        with SampleClient(address, timeout_s=30) as sc:  # priority updates after the snapshot: in the log
            keys = [it["key"] for it in sc.sample(16)]
            assert sc.update_priorities(keys, np.arange(1, 17, dtype=float))["updated"] >= 1
            before = sc.get([t.traj_id for t in trajs])
        assert any((p != 1.0).any() for _, p in before.values())
        stats = ray.get(first.stats.remote(), timeout=30)
        assert stats["priority_mass"] > 0 and stats["durability"]["snapshots"] == 1
        assert (tmp_path / "shard-1").is_dir()
        ray.kill(first)  # no clean shutdown: the log and the snapshot must carry everything
        second = actor_cls.remote(1, "127.0.0.1", 0, replay)
        assert ray.get(second.traj_ids.remote(), timeout=60) == [t.traj_id for t in trajs]
        assert ray.get(second.stats.remote(), timeout=30)["restored_trajectories"] == 12
        with SampleClient(ray.get(second.address.remote(), timeout=30), timeout_s=30) as sc:
            after = sc.get([t.traj_id for t in trajs])
        for tid, (_, prios) in before.items():
            np.testing.assert_array_equal(after[tid][1], prios)
    finally:
        ray.kill(first)
        if second is not None:
            ray.kill(second)


def test_launch_restarts_a_killed_shard_and_its_clients_follow_it_to_its_new_address(ray_cluster, tmp_path):
    """Shards as launch starts them: kill -9 one and Ray brings it back on a new port picked on
    its node; the clients look it up through Ray, follow it, the insert client sends again what
    was in flight, and the log restores what it acknowledged."""
    import os
    import signal

    from launch.cluster import start_shards
    from tests.support.loop_system import loop_cfg

    cfg = loop_cfg(str(tmp_path), [f"buffer.data_dir={tmp_path / 'replay'}", "buffer.success_only=false",
                                   "buffer.snapshot_every_s=null"])
    (shard,), names, (address,) = start_shards(cfg, None)
    assert address.startswith(f"tcp://{ray.util.get_node_ip_address()}:")  # the node's own address
    directory = ShardDirectory(names, None)
    rng = np.random.default_rng(5)
    trajs = [make_trajectory(rng) for _ in range(40)]
    try:
        with (InsertClient(address, window=8, timeout_s=60, resolve=directory.resolver(0)) as ic,
              SampleClient(address, timeout_s=60, resolve=directory.resolver(0)) as sc):
            for t in trajs[:20]:
                ic.insert(t)
            ic.flush()
            pid = ray.get(shard.__ray_call__.remote(lambda self: os.getpid()), timeout=30)
            os.kill(pid, signal.SIGKILL)
            for t in trajs[20:]:
                ic.insert(t)
            ic.flush(120)
            assert ic.reconnects >= 1 and ic.moves == 1
            assert ray.get(shard.__ray_call__.remote(lambda self: os.getpid()), timeout=120) != pid
            moved = ray.get(shard.address.remote(), timeout=60)
            assert moved != address and ic.address == moved
            assert ray.get(shard.traj_ids.remote(), timeout=60) == [t.traj_id for t in trajs]
            assert ray.get(shard.stats.remote(), timeout=60)["restored_trajectories"] == 20
            assert len(sc.sample(8)) == 8 and sc.moves == 1 and sc.address == moved
    finally:
        ray.kill(shard)


def test_a_resumed_shard_exports_its_replay_and_a_ray_restart_does_not_restore_it_again(ray_cluster, tmp_path):
    """A shard started from a learner snapshot's replay file holds that replay; once Ray restarts
    its process, the file is older than what it served since: without a data_dir it comes back
    empty (as any restarted shard without one), not to the resume's state."""
    import os
    import signal

    rng = np.random.default_rng(6)
    actor_cls = ray.remote(num_cpus=0, max_restarts=1, max_task_retries=-1)(ShardActor)
    source = actor_cls.remote(0, "127.0.0.1", 0, ReplayConfig(capacity=100))
    trajs = [make_trajectory(rng) for _ in range(6)]
    resumed = None
    try:
        with InsertClient(ray.get(source.address.remote(), timeout=60), window=4, timeout_s=30) as client:
            for t in trajs:
                client.insert(t)
            client.flush()
        written = ray.get(source.export_snapshot.remote(str(tmp_path / "shard-0.snap")), timeout=60)
        assert written["trajectories"] == 6 and written["bytes"] > 0
        resumed = actor_cls.remote(0, "127.0.0.1", 0, ReplayConfig(capacity=100), restore_from=written["path"])
        assert ray.get(resumed.traj_ids.remote(), timeout=60) == [t.traj_id for t in trajs]
        assert ray.get(resumed.stats.remote(), timeout=30)["restored_from"] == "snapshot"
        pid = ray.get(resumed.__ray_call__.remote(lambda self: os.getpid()), timeout=30)
        os.kill(pid, signal.SIGKILL)
        stats = ray.get(resumed.stats.remote(), timeout=120)  # waits for the restart
        assert ray.get(resumed.__ray_call__.remote(lambda self: os.getpid()), timeout=30) != pid
        assert stats["restored_from"] is None and stats["size_trajectories"] == 0
    finally:
        ray.kill(source)
        if resumed is not None:
            ray.kill(resumed)


def test_a_learner_checkpoint_holds_every_shards_replay_or_none(ray_cluster, tmp_path):
    from learner.checkpoint import save_replay

    rng = np.random.default_rng(7)
    actor_cls = ray.remote(num_cpus=0)(ShardActor)
    shards = [actor_cls.remote(i, "127.0.0.1", 0, ReplayConfig(capacity=100)) for i in range(2)]
    try:
        for i, shard in enumerate(shards):
            with InsertClient(ray.get(shard.address.remote(), timeout=60), window=4, timeout_s=30) as client:
                for _ in range(3 + i):
                    client.insert(make_trajectory(rng))
                client.flush()
        (tmp_path / "a").mkdir()
        saved = save_replay(shards, tmp_path / "a", timeout_s=60)
        assert saved["trajectories"] == 7
        assert sorted(p.name for p in (tmp_path / "a" / "replay").iterdir()) == ["shard-0.snap", "shard-1.snap"]
        ray.kill(shards[1])  # a shard gone for good: the snapshot goes on without a replay
        (tmp_path / "b").mkdir()
        saved = save_replay(shards, tmp_path / "b", timeout_s=60)
        assert saved["error"].startswith("ActorDiedError"), saved  # named, not a stack trace
        assert not (tmp_path / "b" / "replay").exists()
    finally:
        for shard in shards:
            ray.kill(shard)
