"""The new shard ops over real sockets (update_priorities, info, get, stats, snapshot, sample with a
policy version) and the monitoring stats."""

import msgpack
import numpy as np
import pytest

from buffer.core.shard import ReplayShard
from buffer.net.dealer import ShardError
from buffer.net.sample_client import SampleClient
from buffer.net.server import ShardServer
from buffer.wire.schema import encode
from tests.support.trajectories import assert_same_trajectory, make_trajectory, pack

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def served():
    shard = ReplayShard(capacity=100, config={"alpha": 1.0, "beta": 1.0, "recency_gamma": 0.5})
    srv = ShardServer(shard, seed=0).start()
    yield srv
    srv.stop()


def _fill(srv, rng, versions):
    trajs = [make_trajectory(rng, n_steps=2, policy_version=v) for v in versions]
    for t in trajs:
        assert srv.handle(b"insert", encode(t))["status"] == "stored"
    return trajs


def test_items_carry_keys_and_updates_go_through(served):
    rng = np.random.default_rng(120)
    _fill(served, rng, [0, 0, 1])
    with SampleClient(served.address, timeout_s=10) as sc:
        items = sc.sample(50)
        for it in items:
            assert {"key", "probability", "priority", "loss_weight"} <= set(it)
            assert it["priority"] == 1.0 and it["loss_weight"] == pytest.approx(1.0)
        keys = sorted({it["key"] for it in items})
        reply = sc.update_priorities(keys, np.full(len(keys), 4.0))
        assert reply["updated"] == len(keys) and reply["stale"] == 0
        assert sc.update_priorities([keys[0] ^ (1 << 40)], [1.0])["stale"] == 1  # a key never handed out
        for bad in (
            {"keys": [1, 2], "priorities": [1.0]},
            {"keys": [1], "priorities": [float("nan")]},
            {"keys": [1], "priorities": [-1.0]},
            {"keys": b"\x00" * 7, "priorities": b"\x00" * 8},
            {"keys": "x", "priorities": [1.0]},
        ):
            with pytest.raises(ShardError) as e:
                sc.call(b"update_priorities", bad)
            assert e.value.reply["error"] == "bad_request"
        with pytest.raises(ShardError):
            sc.call(b"update_priorities", b"\xc1")
        assert len(sc.sample(4)) == 4  # still serving


def test_info_get_stats_snapshot(served):
    rng = np.random.default_rng(121)
    trajs = _fill(served, rng, [0, 1, 2])
    with SampleClient(served.address, timeout_s=10) as sc:
        info = sc.info()
        assert info["policy_version"] == 2 and info["size_steps"] == 6
        assert info["mass"] == pytest.approx(2 * (0.25 + 0.5 + 1.0))  # Σ p^α γ^(V−v)
        assert info["gamma"] == 0.5 and info["min_a"] == 1.0
        assert sc.info(policy_version=4)["mass"] == pytest.approx(2 * (0.25 + 0.5 + 1.0) / 4)
        got = sc.get([trajs[0].traj_id, "nope"])
        assert set(got) == {trajs[0].traj_id}
        assert_same_trajectory(trajs[0], got[trajs[0].traj_id][0])
        assert got[trajs[0].traj_id][1].tolist() == [1.0, 1.0]
        stats = sc.stats()
        assert stats["size_trajectories"] == 3 and stats["policy_version"] == 4
        assert sc.snapshot() is False  # no data_dir
        for body in (pack({"traj_ids": "x"}), pack({"traj_ids": [1]}), b"\xc1"):
            with pytest.raises(ShardError):
                sc.call(b"get", body)
        with pytest.raises(ShardError):
            sc.call(b"sample", {"n": 1, "policy_version": -1})


def test_sample_with_policy_version_moves_the_shard(served):
    rng = np.random.default_rng(122)
    _fill(served, rng, [0])
    with SampleClient(served.address, timeout_s=10) as sc:
        sc.sample(1, policy_version=9)
        assert sc.last_reply["policy_version"] == 9
    with served.lock:
        assert served.shard.policy_version == 9


def test_monitoring_stats():
    rng = np.random.default_rng(123)
    shard = ReplayShard(capacity=100, config={"success_only": True, "alpha": 0.5})
    for v in (0, 1, 2):
        shard.insert(encode(make_trajectory(rng, n_steps=2, success=True, policy_version=v)))
    shard.insert(encode(make_trajectory(rng, success=False)))
    shard.insert(b"\xc1")
    shard.insert(msgpack.packb([1]))
    shard.sample(300, np.random.default_rng(0))
    stats = shard.stats()
    assert stats["size_trajectories"] == 3 and stats["size_steps"] == 6
    assert stats["inserts_per_s"] > 0 and stats["samples_per_s"] > 0
    assert stats["filtered"] == {"success_only": 1}
    assert stats["rejected"] == {"bad_msgpack": 1, "not_a_map": 1}
    assert 0.5 < stats["mean_staleness"] < 1.5  # ages 2, 1, 0 drawn about equally
    assert stats["priority_mass"] == pytest.approx(6.0)  # six steps of priority 1
    assert stats["samples"] == 300 and stats["last_staleness"] is not None
