"""Filters at insert: each one switchable, each counted by name; the optional screenshot hash."""

import numpy as np
import pytest

from buffer.core.config import BufferConfig, ReplayConfig
from buffer.core.shard import ReplayShard
from buffer.wire.decode import decode
from buffer.wire.schema import WireError, encode
from tests.support.trajectories import make_trajectory, pack, wire_map


@pytest.fixture
def rng():
    return np.random.default_rng(40)


def _with_hashes(rng, hashes, **kw):
    t = make_trajectory(rng, n_steps=len(hashes), success=True, **kw)
    for step, h in zip(t.steps, hashes):
        step.screenshot_hash = h
    return t


def test_screenshot_hash_is_optional_on_the_wire(rng):
    plain = make_trajectory(rng, n_steps=2)
    assert "screenshot_hash" not in wire_map(plain)["steps"][0]  # v1 frames stay byte-identical
    assert decode(encode(plain)).steps[0].screenshot_hash is None
    hashed = _with_hashes(rng, ["a", None])
    back = decode(encode(hashed))
    assert [s.screenshot_hash for s in back.steps] == ["a", None]
    m = wire_map(hashed)
    m["steps"][0]["screenshot_hash"] = 7
    with pytest.raises(WireError) as e:
        decode(pack(m))
    assert e.value.code == "wrong_type" and "steps[0].screenshot_hash" in str(e.value)


def test_same_screenshot_steps_are_dropped_and_counted(rng):
    shard = ReplayShard(capacity=10, config={"same_screenshot": True})
    t = _with_hashes(rng, ["a", "a", "b", None, None, "c", "c"])
    assert shard.insert(encode(t))["status"] == "stored"
    stored = shard.get(t.traj_id)
    # step 0 (a→a) and step 5 (c→c, the last is kept) are dropped; None never matches.
    assert [s.screenshot_hash for s in stored.steps] == ["a", "b", None, None, "c"]
    assert shard.stats()["filtered_steps"] == {"same_screenshot": 2}
    assert shard.num_steps == 5
    off = ReplayShard(capacity=10)
    off.insert(encode(t))
    assert off.num_steps == 7 and off.stats()["filtered_steps"] == {}


def test_min_token_length_drops_short_steps(rng):
    shard = ReplayShard(capacity=10, config={"min_token_length": 3})
    t = make_trajectory(rng, n_steps=3, success=True)
    t.steps[0].response_ids = np.array([1, 2], np.int32)
    t.steps[0].logprobs = np.zeros(2, np.float32)
    t.steps[1].response_ids = np.array([1, 2, 3], np.int32)
    t.steps[1].logprobs = np.zeros(3, np.float32)
    t.steps[2].response_ids = np.zeros(0, np.int32)
    t.steps[2].logprobs = np.zeros(0, np.float32)
    assert shard.insert(encode(t))["status"] == "stored"
    assert shard.num_steps == 1
    assert shard.stats()["filtered_steps"] == {"min_token_length": 2}
    t2 = make_trajectory(rng, n_steps=1)
    t2.steps[0].response_ids = np.array([5], np.int32)
    t2.steps[0].logprobs = np.zeros(1, np.float32)
    reply = shard.insert(encode(t2))
    assert reply["status"] == "filtered" and reply["filter"] == "min_steps"  # nothing left


def test_min_steps_and_empty(rng):
    shard = ReplayShard(capacity=10, config={"min_steps": 3, "drop_empty": True})
    assert shard.insert(encode(make_trajectory(rng, n_steps=2)))["filter"] == "min_steps"
    empty = make_trajectory(rng, n_steps=3)
    for s in empty.steps:
        s.response_ids, s.logprobs = np.zeros(0, np.int32), np.zeros(0, np.float32)
    assert shard.insert(encode(empty))["filter"] == "empty"
    assert shard.insert(encode(make_trajectory(rng, n_steps=3)))["status"] == "stored"
    assert shard.stats()["filtered"] == {"min_steps": 1, "empty": 1}


def test_invalid_frames_are_rejected_before_the_filters(rng):
    shard = ReplayShard(capacity=10, config={"min_steps": 1})
    m = wire_map(make_trajectory(rng))
    m["steps"] = []
    assert shard.insert(pack(m))["error"] == "missing_field"
    m = wire_map(make_trajectory(rng))
    m["steps"][0]["action"] = None
    assert shard.insert(pack(m))["error"] == "wrong_type"
    assert shard.stats()["rejected"] == {"missing_field": 1, "wrong_type": 1}
    assert shard.stats()["filtered"] == {}


def test_filters_combine_in_order(rng):
    shard = ReplayShard(capacity=10, config={"success_only": True, "same_screenshot": True, "min_steps": 2})
    fail = _with_hashes(rng, ["a", "b"])
    fail.success = False
    assert shard.insert(encode(fail))["filter"] == "success_only"
    shrunk = _with_hashes(rng, ["a", "a", "a"])  # two steps dropped -> 1 step < min_steps
    assert shard.insert(encode(shrunk))["filter"] == "min_steps"
    assert shard.stats()["filtered"] == {"success_only": 1, "min_steps": 1}
    assert shard.stats()["filtered_steps"] == {"same_screenshot": 2}


def test_duplicate_of_a_step_filtered_trajectory_is_still_a_duplicate(rng):
    shard = ReplayShard(capacity=10, config={"same_screenshot": True})
    t = _with_hashes(rng, ["a", "a", "b"])
    shard.insert(encode(t))
    assert shard.insert(encode(t))["detail"] == "duplicate"
    assert shard.stats()["stored"] == 1 and shard.stats()["duplicates"] == 1


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown replay config keys"):
        ReplayConfig.from_dict({"alpah": 0.6})
    assert BufferConfig.from_dict({"shards": 4, "alpha": 0.6}).replay().alpha == 0.6
    with pytest.raises(ValueError):
        ReplayConfig(min_token_length=-1)


def test_buffer_config_is_the_replay_config_and_the_launchers_two_keys():
    cfg = BufferConfig(shards=3, max_restarts=1, capacity=7, alpha=0.5, data_dir="/tmp/replay")
    replay = cfg.replay()
    assert type(replay) is ReplayConfig
    assert replay == ReplayConfig(capacity=7, alpha=0.5, data_dir="/tmp/replay")
    assert set(cfg.to_dict()) - set(replay.to_dict()) == {"shards", "max_restarts"}
    assert (BufferConfig().shards, BufferConfig().max_restarts) == (1, 3)
    with pytest.raises(ValueError, match="shards"):  # a shard takes only its own part
        ReplayConfig.from_dict({"shards": 4})
    with pytest.raises(ValueError, match="shards"):
        BufferConfig(shards=0)
    assert ReplayShard(config=cfg).capacity == 7  # a BufferConfig given to a shard: its replay part
