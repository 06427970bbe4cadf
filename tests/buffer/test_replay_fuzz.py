"""1,000 fuzzed frames over the wire (random bytes, truncated msgpack, wrong types, NaN, oversized):
every one rejected with a named error, and the shard still serves correct inserts afterwards."""

import math
from collections import Counter

import numpy as np
import pytest

from buffer.core.shard import ReplayShard
from buffer.net.insert_client import InsertClient
from buffer.net.sample_client import SampleClient
from buffer.net.server import ShardServer
from buffer.wire.schema import ERROR_CODES, encode
from tests.support.trajectories import make_trajectory, pack, wire_map

pytestmark = pytest.mark.timeout(120)
MAX_FRAME = 64 * 1024
WRONG_VALUES = [None, [], {}, "x", b"x", 1.5, -3, True]


def _random_bytes(rng):
    return rng.bytes(int(rng.integers(0, 400)))


def _truncated(rng):
    frame = encode(make_trajectory(rng))
    return frame[: int(rng.integers(0, len(frame)))]


def _wrong_type(rng):
    m = wire_map(make_trajectory(rng, n_steps=2))
    target = m if rng.random() < 0.5 else m["steps"][int(rng.integers(2))]
    key = sorted(target)[int(rng.integers(len(target)))]
    current = target[key]
    choices = [v for v in WRONG_VALUES if type(v) is not type(current) and not _compatible(current, v)]
    target[key] = choices[int(rng.integers(len(choices)))]
    return pack(m)


def _compatible(current, value):
    """A value the schema would accept in place of `current` (ints widen to floats)."""
    return isinstance(current, float) and type(value) is int


def _nan(rng):
    m = wire_map(make_trajectory(rng, n_steps=2))
    bad = [math.nan, math.inf, -math.inf][int(rng.integers(3))]
    where = int(rng.integers(4))
    if where == 0:
        m["reward"] = bad
    elif where == 1:
        m["created_at"] = bad
    elif where == 2:
        m["steps"][1]["reward"] = bad
    else:
        lp = np.frombuffer(m["steps"][0]["logprobs"], "<f4").copy()
        lp[int(rng.integers(len(lp)))] = bad
        m["steps"][0]["logprobs"] = lp.tobytes()
    return pack(m)


def _oversized(rng):
    t = make_trajectory(rng, n_steps=1)
    n = int(rng.integers(MAX_FRAME // 4 + 1, 2 * MAX_FRAME // 4))  # 1x..2x the limit, under MAXMSGSIZE
    t.steps[0].prompt_ids = rng.integers(0, 1000, size=n).astype(np.int32)
    return encode(t)


KINDS = {
    "random_bytes": (_random_bytes, {"bad_msgpack", "not_a_map"}),  # the named codes random bytes can earn
    "truncated": (_truncated, {"bad_msgpack"}),
    "wrong_type": (_wrong_type, {"wrong_type", "unknown_schema"}),  # a wrong-typed schema field is the latter
    "nan": (_nan, {"nan"}),
    "oversized": (_oversized, {"oversized"}),
}


def test_thousand_fuzzed_frames_are_rejected_and_the_shard_keeps_serving():
    rng = np.random.default_rng(100)
    shard = ReplayShard(capacity=1000, max_frame_bytes=MAX_FRAME)
    frames, kinds = [], []
    for i in range(1000):
        kind = list(KINDS)[i % len(KINDS)]
        frames.append(KINDS[kind][0](rng))
        kinds.append(kind)
    with ShardServer(shard, seed=0) as srv, InsertClient(srv.address, window=64, timeout_s=30) as ic:
        for f in frames:
            ic.insert(f)
        ic.flush()
        replies = ic.poll()
        assert len(replies) == 1000
        by_kind: dict[str, Counter] = {k: Counter() for k in KINDS}
        for kind, (_, reply) in zip(kinds, replies):
            assert reply["status"] == "error", (kind, reply)
            assert reply["error"] in ERROR_CODES and reply["detail"].startswith(reply["error"] + ": ")
            by_kind[kind][reply["error"]] += 1
        for kind, (_, expected) in KINDS.items():
            assert set(by_kind[kind]) <= expected, (kind, by_kind[kind])
        assert by_kind["wrong_type"]["wrong_type"] >= 190 and by_kind["truncated"]["bad_msgpack"] == 200
        with srv.lock:
            stats = shard.stats()
        assert sum(stats["rejected"].values()) == 1000 and stats["size_trajectories"] == 0

        good = [make_trajectory(rng) for _ in range(20)]
        for t in good:
            ic.insert(t)
        ic.flush()
        assert ic.counts["stored"] == 20
        with SampleClient(srv.address, timeout_s=10) as sc:
            items = sc.sample(100)
        assert {it["traj_id"] for it in items} <= {t.traj_id for t in good} and len(items) == 100
