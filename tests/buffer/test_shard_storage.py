"""ReplayShard without networking: storage, filter, eviction, counters, sampling."""

import numpy as np
import pytest

from buffer.core.shard import ReplayShard
from buffer.wire.schema import FLOAT32, INT32, encode
from tests.support.trajectories import make_trajectory, pack, wire_map


@pytest.fixture
def rng():
    return np.random.default_rng(1)


def test_insert_stores_and_replies(rng):
    shard = ReplayShard(capacity=10)
    traj = make_trajectory(rng, n_steps=3)
    reply = shard.insert(encode(traj))
    assert reply == {
        "status": "stored",
        "traj_id": traj.traj_id,
        "filter": None,
        "error": None,
        "detail": None,
        "seq": 1,
    }
    assert shard.traj_ids() == [traj.traj_id]
    stats = shard.stats()
    assert stats["size_trajectories"] == 1 and stats["size_steps"] == 3
    assert stats["inserts"] == 1 and stats["stored"] == 1


def test_duplicate_is_acknowledged_once(rng):
    shard = ReplayShard(capacity=10)
    traj = make_trajectory(rng, n_steps=2)
    first = shard.insert(encode(traj))
    again = shard.insert(encode(traj))
    assert first["status"] == again["status"] == "stored"
    assert again["detail"] == "duplicate" and again["traj_id"] == traj.traj_id
    assert shard.traj_ids() == [traj.traj_id]
    stats = shard.stats()
    assert stats["stored"] == 1 and stats["duplicates"] == 1 and stats["inserts"] == 2
    assert stats["size_steps"] == 2


def test_success_only_filter(rng):
    shard = ReplayShard(capacity=10, success_only=True)
    ok = make_trajectory(rng, success=True)
    bad = make_trajectory(rng, success=False)
    assert shard.insert(encode(ok))["status"] == "stored"
    reply = shard.insert(encode(bad))
    assert reply["status"] == "filtered" and reply["filter"] == "success_only"
    assert reply["traj_id"] == bad.traj_id
    assert shard.traj_ids() == [ok.traj_id]
    assert shard.stats()["filtered"] == {"success_only": 1}


def test_filter_off_keeps_failures(rng):
    shard = ReplayShard(capacity=10, success_only=False)
    assert shard.insert(encode(make_trajectory(rng, success=False)))["status"] == "stored"
    assert shard.stats()["filtered"] == {}


def test_rejections_are_counted_by_code(rng):
    shard = ReplayShard(capacity=10)
    m = wire_map(make_trajectory(rng))
    m["schema"] = 99
    for frame in (b"\xc1", pack([1]), pack(m)):
        assert shard.insert(frame)["status"] == "error"
    reply = shard.insert(b"\xc1")
    assert reply["error"] == "bad_msgpack" and reply["detail"].startswith("bad_msgpack: ")
    assert shard.stats()["rejected"] == {
        "bad_msgpack": 2,
        "not_a_map": 1,
        "unknown_schema": 1,
    }
    assert len(shard) == 0 and shard.stats()["inserts"] == 4


def test_error_reply_names_traj_id_when_readable(rng):
    shard = ReplayShard(capacity=10)
    m = wire_map(make_trajectory(rng, traj_id="t-7"))
    del m["steps"][0]["logprobs"]
    reply = shard.insert(pack(m))
    assert reply["error"] == "missing_field" and reply["traj_id"] == "t-7"
    assert "steps[0].logprobs" in reply["detail"]


def test_oversized_frame_is_rejected(rng):
    shard = ReplayShard(capacity=10, max_frame_bytes=100)
    reply = shard.insert(encode(make_trajectory(rng)))
    assert reply["error"] == "oversized"


def test_fifo_eviction_of_whole_trajectories(rng):
    shard = ReplayShard(capacity=3)
    trajs = [make_trajectory(rng) for _ in range(5)]
    for t in trajs:
        shard.insert(encode(t))
    assert shard.traj_ids() == [t.traj_id for t in trajs[2:]]
    stats = shard.stats()
    assert stats["evicted"] == 2 and stats["stored"] == 5
    assert stats["size_steps"] == sum(len(t.steps) for t in trajs[2:])


def test_evicted_traj_id_can_be_stored_again(rng):
    shard = ReplayShard(capacity=1)
    a, b = make_trajectory(rng), make_trajectory(rng)
    shard.insert(encode(a))
    shard.insert(encode(b))
    assert shard.insert(encode(a))["detail"] is None
    assert shard.traj_ids() == [a.traj_id]


def test_sample_shapes_and_only_stored_steps(rng):
    shard = ReplayShard(capacity=4)
    trajs = {}
    for _ in range(7):
        t = make_trajectory(rng)
        trajs[t.traj_id] = t
        shard.insert(encode(t))
    stored = set(shard.traj_ids())
    items = shard.sample(200, np.random.default_rng(2))
    assert len(items) == 200
    for it in items:
        assert set(it) == {
            "traj_id", "step_index", "prompt_ids", "response_ids", "logprobs", "action",
            "reward", "return", "success", "policy_version", "loss_weight",
        }  # fmt: skip
        assert it["traj_id"] in stored
        traj = trajs[it["traj_id"]]
        step = traj.steps[it["step_index"]]
        np.testing.assert_array_equal(np.frombuffer(it["prompt_ids"], INT32), step.prompt_ids)
        np.testing.assert_array_equal(np.frombuffer(it["response_ids"], INT32), step.response_ids)
        np.testing.assert_array_equal(np.frombuffer(it["logprobs"], FLOAT32), step.logprobs)
        assert it["reward"] == step.reward and it["return"] == traj.reward
        assert it["success"] == traj.success and it["policy_version"] == step.policy_version
        assert it["loss_weight"] == 1.0 and it["action"] == step.action
    assert shard.stats()["samples"] == 200


def test_sample_is_uniform_over_steps_not_trajectories(rng):
    shard = ReplayShard(capacity=10)
    long, short = make_trajectory(rng, n_steps=9), make_trajectory(rng, n_steps=1)
    shard.insert(encode(long))
    shard.insert(encode(short))
    items = shard.sample(2000, np.random.default_rng(3))
    from_short = sum(it["traj_id"] == short.traj_id for it in items)
    # Expected 200 of 2000 (1 step in 10); per trajectory it would be 1000.
    assert 100 < from_short < 350
    seen = {(it["traj_id"], it["step_index"]) for it in items}
    assert len(seen) == 10


def test_sample_empty_and_bad_n(rng):
    shard = ReplayShard(capacity=2)
    assert shard.sample(5, rng) == []
    with pytest.raises(ValueError):
        shard.sample(0, rng)


def test_sample_after_eviction_never_returns_evicted(rng):
    shard = ReplayShard(capacity=2)
    for _ in range(3):
        shard.insert(encode(make_trajectory(rng)))
        shard.sample(10, rng)  # builds the sampling index, which eviction must invalidate
    stored = set(shard.traj_ids())
    assert {it["traj_id"] for it in shard.sample(300, rng)} == stored


def test_stats_is_a_copy(rng):
    shard = ReplayShard(capacity=2)
    shard.insert(b"\xc1")
    stats = shard.stats()
    stats["rejected"]["bad_msgpack"] = 100
    assert shard.stats()["rejected"] == {"bad_msgpack": 1}


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        ReplayShard(capacity=0)
