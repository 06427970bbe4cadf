"""GRPO group sampling: only whole, complete groups; eviction breaks a group; priorities apply."""

from collections import Counter

import numpy as np
import pytest

from buffer.core.shard import ReplayShard
from buffer.net.sample_client import SampleClient
from buffer.net.server import ShardServer
from buffer.wire.decode import decode
from buffer.wire.schema import encode
from tests.support.trajectories import chi_square, make_trajectory


def _insert_group(shard, rng, gid, k, version=0):
    trajs = [make_trajectory(rng, group_id=gid, policy_version=version, success=bool(i % 2)) for i in range(k)]
    for t in trajs:
        assert shard.insert(encode(t))["status"] == "stored"
    return trajs


def test_only_complete_groups_are_drawn_whole():
    rng = np.random.default_rng(60)
    shard = ReplayShard(capacity=100, config={"group_size": 4})
    full = _insert_group(shard, rng, "g-full", 4)
    _insert_group(shard, rng, "g-partial", 3)
    status, groups = shard.sample_groups(50, np.random.default_rng(61))
    assert status == "ok" and len(groups) == 50
    for g in groups:
        assert g["group_id"] == "g-full"
        assert sorted(decode(f).traj_id for f in g["frames"]) == sorted(t.traj_id for t in full)
        assert [len(k) for k in g["keys"]] == [8 * len(decode(f).steps) for f in g["frames"]]
    stats = shard.stats()
    assert stats["groups"] == 2 and stats["groups_complete"] == 1
    assert stats["samples"] == 50 * sum(len(t.steps) for t in full)
    _insert_group(shard, rng, "g-partial", 1)  # the fourth episode arrives
    _, groups = shard.sample_groups(400, np.random.default_rng(62))
    assert Counter(g["group_id"] for g in groups).keys() == {"g-full", "g-partial"}


def test_no_complete_group_is_empty():
    rng = np.random.default_rng(63)
    shard = ReplayShard(capacity=100, config={"group_size": 2})
    assert shard.sample_groups(1, rng) == ("empty", [])
    _insert_group(shard, rng, "g", 1)
    assert shard.sample_groups(1, rng) == ("empty", [])
    with pytest.raises(ValueError):
        ReplayShard(capacity=10).sample_groups(1, rng)


def test_eviction_of_a_member_makes_the_group_undrawable():
    rng = np.random.default_rng(64)
    shard = ReplayShard(capacity=4, config={"group_size": 2})
    _insert_group(shard, rng, "old", 2)
    _insert_group(shard, rng, "new", 2)
    _insert_group(shard, rng, "newer", 1)  # evicts one member of "old"
    _, groups = shard.sample_groups(200, np.random.default_rng(65))
    assert {g["group_id"] for g in groups} == {"new"}
    assert shard.stats()["groups_complete"] == 1


def test_group_draws_follow_priorities_and_recency():
    rng = np.random.default_rng(66)
    shard = ReplayShard(capacity=100, config={"group_size": 2, "alpha": 1.0, "recency_gamma": 0.5})
    specs = [("a", 0, 1.0), ("b", 1, 1.0), ("c", 1, 3.0), ("d", 2, 2.0)]
    for gid, version, prio in specs:
        trajs = _insert_group(shard, rng, gid, 2, version=version)
        keys = np.concatenate([shard.store.keys(shard.store.get(t.traj_id).slots) for t in trajs])
        shard.update_priorities(keys, np.full(len(keys), prio))
    counts = Counter()
    draw_rng = np.random.default_rng(67)
    for _ in range(20):
        counts.update(g["group_id"] for g in shard.sample_groups(1000, draw_rng)[1])
    observed = np.array([counts[s[0]] for s in specs])
    target = np.array([p * 0.5 ** (2 - v) for _, v, p in specs])
    stat, crit = chi_square(observed, target / target.sum())
    assert stat < crit
    assert chi_square(observed, np.full(4, 0.25))[0] > crit


def test_group_importance_weights():
    rng = np.random.default_rng(68)
    shard = ReplayShard(capacity=100, config={"group_size": 2, "alpha": 1.0, "beta": 0.5})
    for gid, prio in (("lo", 1.0), ("hi", 4.0)):
        trajs = _insert_group(shard, rng, gid, 2)
        keys = np.concatenate([shard.store.keys(shard.store.get(t.traj_id).slots) for t in trajs])
        shard.update_priorities(keys, np.full(len(keys), prio))
    status, groups = shard.sample_groups(100, np.random.default_rng(69))
    assert status == "ok" and len(groups) == 100 and {g["group_id"] for g in groups} == {"lo", "hi"}
    for g in groups:
        assert g["weight"] == pytest.approx(1.0 if g["group_id"] == "lo" else 0.5)


def test_group_sampling_over_the_wire():
    rng = np.random.default_rng(70)
    shard = ReplayShard(capacity=100, config={"group_size": 3})
    trajs = _insert_group(shard, rng, "g", 3)
    with ShardServer(shard, seed=0) as srv, SampleClient(srv.address, timeout_s=10) as sc:
        groups = sc.sample_groups(2)
        assert len(groups) == 2
        got = {t.traj_id for t in groups[0]["trajectories"]}
        assert got == {t.traj_id for t in trajs}
        keys = np.concatenate(groups[0]["keys"])
        assert sc.update_priorities(keys, np.full(len(keys), 2.0))["updated"] == len(keys)
