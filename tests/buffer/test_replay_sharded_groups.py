"""GRPO groups over several real shards: inserts routed by group_id keep each group on one shard
(where it completes), and sample_groups draws whole groups across shards in proportion to each
shard's complete-group mass, tagged with their shard for priority updates."""

from collections import Counter

import numpy as np
import pytest

from buffer.core.shard import ReplayShard
from buffer.net.server import ShardServer
from buffer.net.sharded_clients import ShardedInsertClient, ShardedSampleClient
from buffer.routing import route_key, shard_for
from buffer.wire.schema import encode
from tests.support.trajectories import chi_square, make_trajectory

pytestmark = pytest.mark.timeout(120)
GROUP = 4


@pytest.fixture
def servers(request):
    config = {"group_size": GROUP, **getattr(request, "param", {})}
    srvs = [ShardServer(ReplayShard(capacity=1000, config=config), seed=i).start() for i in range(3)]
    yield srvs
    for s in srvs:
        s.stop()


def _groups(rng, n_groups, n_steps=None):
    return {
        f"task:{g}": [make_trajectory(rng, group_id=f"task:{g}", n_steps=n_steps) for _ in range(GROUP)]
        for g in range(n_groups)
    }


def _insert(addresses, groups):
    with ShardedInsertClient(addresses, window=8, timeout_s=10) as ic:
        for members in groups.values():
            for t in members:
                assert ic.insert(t) == shard_for(t.group_id, len(addresses))
        ic.flush()
        assert ic.acks and all(r["status"] == "stored" for r in ic.acks.values())


def test_a_group_lands_on_one_shard_and_completes(servers):
    rng = np.random.default_rng(130)
    groups = _groups(rng, 12)
    _insert([s.address for s in servers], groups)
    held = []
    for srv in servers:
        with srv.lock:
            held.append(set(srv.shard.traj_ids()))
            assert srv.shard.stats()["groups"] == srv.shard.stats()["groups_complete"]
    for gid, members in groups.items():
        where = {i for i, ids in enumerate(held) for t in members if t.traj_id in ids}
        assert where == {shard_for(gid, 3)}, gid
    assert sum(s.shard.stats()["groups_complete"] for s in servers) == 12
    used = {shard_for(gid, 3) for gid in groups}
    assert len(used) >= 2  # the test needs groups on more than one shard


def test_route_key_falls_back_to_traj_id():
    assert route_key("t1", "g") == "g"
    assert route_key("t1", "") == "t1"
    assert route_key("t1", None) == "t1"


def test_encoded_frames_are_routed_by_their_group_id_too(servers):
    rng = np.random.default_rng(131)
    t = make_trajectory(rng, group_id="only-group")
    with ShardedInsertClient([s.address for s in servers], timeout_s=10) as ic:
        assert ic.insert(encode(t)) == shard_for("only-group", 3)
        assert ic.insert(encode(t), traj_id=t.traj_id, group_id=t.group_id) == shard_for("only-group", 3)
        ic.flush()


@pytest.mark.parametrize("servers", [{"alpha": 1.0, "beta": 1.0}], indirect=True)
def test_sample_groups_is_one_sample_across_shards(servers):
    rng = np.random.default_rng(132)
    addresses = [s.address for s in servers]
    groups = _groups(rng, 9, n_steps=2)
    _insert(addresses, groups)
    with ShardedSampleClient(addresses, timeout_s=10, seed=133) as sc:
        # Every group gets its own priority (all its steps alike), sent back to the right shard.
        first = sc.sample_groups(400)
        seen = {}
        for g in first:
            seen.setdefault(g["group_id"], g)
        assert seen.keys() == groups.keys()
        prio = {gid: float(i + 1) for i, gid in enumerate(sorted(groups))}
        keys, prios, shards = [], [], []
        for gid, g in seen.items():
            assert g["shard"] == shard_for(gid, 3)
            for k in g["keys"]:
                keys.extend(k.tolist())
                prios.extend([prio[gid]] * len(k))
                shards.extend([g["shard"]] * len(k))
        assert sc.update_priorities(keys, prios, shards)["updated"] == 9 * GROUP * 2

        drawn = []
        for _ in range(30):
            drawn.extend(sc.sample_groups(100))
    for g in drawn:  # whole groups, tagged with the shard that holds them
        assert len(g["trajectories"]) == GROUP
        assert {t.group_id for t in g["trajectories"]} == {g["group_id"]}
        assert g["shard"] == shard_for(g["group_id"], 3)
    ids = sorted(groups)
    total = sum(prio.values())
    expected = np.array([prio[gid] / total for gid in ids])
    counts = Counter(g["group_id"] for g in drawn)
    stat, crit = chi_square(np.array([counts[gid] for gid in ids]), expected)
    assert stat < crit, (stat, crit, counts)
    for g in drawn:  # the global probability of each draw, and weights (min_A / A_g)^β over all shards
        assert g["probability"] == pytest.approx(prio[g["group_id"]] / total, rel=1e-9)
        assert g["weight"] == pytest.approx(min(prio.values()) / prio[g["group_id"]], rel=1e-9)
