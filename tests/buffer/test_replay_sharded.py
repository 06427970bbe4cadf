"""Clients over several shards: routing by traj_id (trajectories without a group; groups: see
test_replay_sharded_groups.py), and one prioritized sample across shards
(per-trajectory chi-square on the union), global importance weights, priority updates."""

from collections import Counter

import numpy as np
import pytest

from buffer.core.shard import ReplayShard
from buffer.net.server import ShardServer
from buffer.net.sharded_clients import ShardedInsertClient, ShardedSampleClient
from buffer.routing import shard_for
from buffer.wire.schema import encode
from tests.support.trajectories import chi_square, make_trajectory

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def servers(request):
    config = getattr(request, "param", {})
    srvs = [ShardServer(ReplayShard(capacity=1000, config=config), seed=i).start() for i in range(3)]
    yield srvs
    for s in srvs:
        s.stop()


def _addresses(srvs):
    return [s.address for s in srvs]


def test_insert_without_a_group_routes_by_traj_id_and_resends_are_stored_once(servers):
    rng = np.random.default_rng(110)
    trajs = [make_trajectory(rng, group_id="") for _ in range(60)]
    with ShardedInsertClient(_addresses(servers), window=8, timeout_s=10) as ic:
        for t in trajs:
            assert ic.insert(t) == shard_for(t.traj_id, 3)
        for t in trajs[:10]:
            ic.insert(t)  # resent: same shard, idempotent
        ic.flush()
        assert ic.in_flight == 0 and len(ic.acks) == 60
    for i, srv in enumerate(servers):
        with srv.lock:
            held = set(srv.shard.traj_ids())
        assert held == {t.traj_id for t in trajs if shard_for(t.traj_id, 3) == i}
    assert sum(s.shard.stats()["duplicates"] for s in servers) == 10


@pytest.mark.parametrize("servers", [{"alpha": 1.0, "beta": 1.0}], indirect=True)
def test_union_is_one_prioritized_sample(servers):
    rng = np.random.default_rng(111)
    trajs = [make_trajectory(rng, group_id="", n_steps=1) for _ in range(12)]
    prio = {t.traj_id: float(p) for t, p in zip(trajs, rng.integers(1, 10, size=12))}
    with ShardedInsertClient(_addresses(servers), timeout_s=10) as ic:
        for t in trajs:
            ic.insert(t)
        ic.flush()
    with ShardedSampleClient(_addresses(servers), timeout_s=10, seed=112) as sc:
        items = sc.sample(500)
        seen = {}
        for it in items:
            seen[it["traj_id"]] = it
        assert len(seen) == 12
        done = sc.update_priorities(list(seen.values()), [prio[t] for t in seen])
        assert done == {"updated": 12, "stale": 0}
        counts = Counter()
        for _ in range(40):
            batch = sc.sample(1000)
            assert len(batch) == 1000
            counts.update(it["traj_id"] for it in batch)
        # Global importance weights: (min over all shards of p / p_i)^β with β = 1.
        p_min = min(prio.values())
        for it in batch[:200]:
            assert it["loss_weight"] == pytest.approx(p_min / prio[it["traj_id"]])
            assert it["probability"] == pytest.approx(prio[it["traj_id"]] / sum(prio.values()))
    ids = [t.traj_id for t in trajs]
    observed = np.array([counts[t] for t in ids])
    target = np.array([prio[t] for t in ids])
    stat, crit = chi_square(observed, target / target.sum())
    assert stat < crit
    assert chi_square(observed, np.full(12, 1 / 12))[0] > crit


@pytest.mark.parametrize("servers", [{"recency_gamma": 0.6}], indirect=True)
def test_exponential_recency_across_shards_at_different_versions(servers):
    rng = np.random.default_rng(113)
    # Each shard sees different versions, so each reports its mass at its own newest V.
    plan = {0: [0, 1, 2], 1: [3, 4], 2: [6, 1]}
    trajs = []
    for s, versions in plan.items():
        for v in versions:
            t = make_trajectory(rng, group_id="", n_steps=1, policy_version=v)
            servers[s].handle(b"insert", encode(t))
            trajs.append((t.traj_id, v))
    with ShardedSampleClient(_addresses(servers), timeout_s=10, seed=114) as sc:
        counts = Counter()
        for _ in range(30):
            counts.update(it["traj_id"] for it in sc.sample(1000))
        assert sc.policy_version == 6
    observed = np.array([counts[t] for t, _ in trajs])
    target = np.array([0.6 ** (6 - v) for _, v in trajs])
    stat, crit = chi_square(observed, target / target.sum())
    assert stat < crit
    per_shard_uniform = np.array([1.0 / len(vs) for vs in plan.values() for _ in vs])
    assert chi_square(observed, per_shard_uniform / per_shard_uniform.sum())[0] > crit


def test_empty_shards_get_no_share(servers):
    rng = np.random.default_rng(115)
    t = make_trajectory(rng, group_id="", n_steps=2)
    servers[1].handle(b"insert", encode(t))
    with ShardedSampleClient(_addresses(servers), timeout_s=10, seed=116) as sc:
        items = sc.sample(64)
        assert len(items) == 64 and {it["shard"] for it in items} == {1}
        assert sc.last_counts == [0, 64, 0]
        assert sc.last_status == ["none", "ok", "none"]
