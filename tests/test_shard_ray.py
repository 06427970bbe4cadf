"""ShardActor hosted by a real local Ray: control over Ray, data over ZMQ."""

import shutil
import tempfile

import numpy as np
import pytest
import ray

from buffer.client import InsertClient, SampleClient
from buffer.service import ShardActor
from tests.trajectories import make_trajectory

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
    shard = actor_cls.options(name="flywheel:shard-0").remote(0, 5, True)
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
