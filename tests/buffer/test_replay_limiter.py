"""Samples-per-insert rate limiter: Reverb's rules, waiting and "retry" over the wire, and the
ratio staying inside the error buffer under concurrent inserts and samples."""

import threading

import msgpack
import numpy as np
import pytest

from buffer.core.limiter import RateLimiter
from buffer.core.shard import ReplayShard
from buffer.net.insert_client import InsertClient
from buffer.net.sample_client import SampleClient
from buffer.net.server import ShardServer
from buffer.wire.schema import encode
from tests.support.trajectories import make_trajectory

pytestmark = pytest.mark.timeout(120)


def test_reverb_rules():
    lim = RateLimiter(samples_per_insert=2.0, min_size_to_sample=4, error_buffer=3.0)
    assert (lim.min_diff, lim.max_diff) == (5.0, 11.0)
    assert not lim.can_sample(1)  # below min size
    for _ in range(4):
        assert lim.can_insert(1)
        lim.on_insert(1)
    assert lim.diff == 8.0 and lim.can_sample(3) and not lim.can_sample(4)
    assert lim.can_insert(1) and not lim.can_insert(2)  # 8 + 2·2 = 12 > 11
    lim.on_sample(3)
    assert lim.diff == 5.0 and not lim.can_sample(1)
    assert lim.seen_min_diff >= lim.min_diff and lim.seen_max_diff <= lim.max_diff
    lim.on_sample(4)  # a caller that ignores the rules shows up in the extremes
    assert lim.seen_min_diff < lim.min_diff
    with pytest.raises(ValueError):
        RateLimiter(samples_per_insert=4.0, error_buffer=2.0)


def test_deadlock_escape_counts_forced_inserts():
    lim = RateLimiter(samples_per_insert=1.0, min_size_to_sample=1, error_buffer=1.0)
    lim.on_insert(1)
    lim.on_sample(1)  # diff 0 = min_diff: samples blocked
    assert not lim.can_insert(5) and lim.must_force(5)
    lim.on_insert(5)
    assert lim.forced_inserts == 1


def test_shard_answers_retry_and_counts(tmp_path):
    rng = np.random.default_rng(50)
    shard = ReplayShard(capacity=100, config={"samples_per_insert": 1.0, "min_size_to_sample": 2, "error_buffer": 2.0})
    t = [make_trajectory(rng, n_steps=1) for _ in range(6)]
    sample_rng = np.random.default_rng(0)
    assert shard.sample(1, sample_rng).status == "retry"  # below min size
    for x in t[:4]:
        assert shard.insert(encode(x))["status"] == "stored"  # 2 free, then diff 3, 4 <= max 4
    reply = shard.insert(encode(t[4]))
    assert reply["status"] == "retry" and reply["detail"] == "rate_limited"
    assert shard.stats()["blocked_inserts"] == 1 and shard.stats()["inserts"] == 4
    assert len(shard.sample(2, sample_rng)) == 2  # diff 4 -> 2 = min_diff 0 + 2
    assert shard.insert(encode(t[4]))["status"] == "stored"
    assert shard.stats()["limiter"]["samples"] == 2


def _limited_server(**cfg):
    config = {"samples_per_insert": 1.0, "min_size_to_sample": 1, "error_buffer": 2.0, "insert_timeout_s": 0.2}
    config.update(cfg)
    return ShardServer(ReplayShard(capacity=1000, config=config), seed=0).start()


def test_blocked_sample_waits_or_is_told_to_retry():
    rng = np.random.default_rng(51)
    srv = _limited_server()
    try:
        with SampleClient(srv.address, timeout_s=10) as sc, InsertClient(srv.address, timeout_s=10) as ic:
            assert sc.sample(1, timeout_ms=0) == [] and sc.last_reply["status"] == "retry"
            req = sc.request(b"sample", {"n": 1, "timeout_ms": 10_000})  # waits in the server...
            ic.insert(make_trajectory(rng, n_steps=1))
            ic.flush()
            reply = sc.reply(req)  # ...and is served once the insert made room
            assert reply["status"] == "ok" and len(reply["items"]) == 1
            # diff = 1 insert − 1 sample = 0; min_diff = 1·1 − 2 = −1: one more, then no more.
            assert len(sc.sample(1, timeout_ms=50)) == 1
            assert sc.sample(1, timeout_ms=50) == [] and sc.last_reply["status"] == "retry"
    finally:
        srv.stop()


def test_blocked_insert_is_answered_retry_after_its_timeout_and_the_client_resends():
    rng = np.random.default_rng(52)
    srv = _limited_server()
    try:
        trajs = [make_trajectory(rng, n_steps=1) for _ in range(6)]
        with InsertClient(srv.address, window=8, timeout_s=20) as ic, SampleClient(srv.address, timeout_s=10) as sc:
            for t in trajs:
                ic.insert(t)
            # max_diff = 1 + 2 = 3: three are stored; the others wait in the server, are answered
            # "retry" after insert_timeout_s and sent again by the client, while nobody samples.
            with pytest.raises(TimeoutError):
                ic.flush(timeout_s=2.0)
            assert ic.counts["stored"] == 3 and ic.in_flight == 3
            got = 0
            while ic.in_flight:
                ic.poll()
                items = sc.sample(1, timeout_ms=100)
                got += len(items)
            assert ic.resends >= 1 and ic.counts["stored"] == 6
            with srv.lock:
                assert set(srv.shard.traj_ids()) == {t.traj_id for t in trajs}
                lim = srv.shard.limiter
                assert lim.seen_max_diff <= lim.max_diff and lim.seen_min_diff >= lim.min_diff
    finally:
        srv.stop()


def test_ratio_stays_in_the_error_buffer_under_concurrency():
    spi, eb, min_size, steps = 2.0, 24.0, 10, 2
    srv = _limited_server(samples_per_insert=spi, error_buffer=eb, min_size_to_sample=min_size, insert_timeout_s=0.2)
    n_per_inserter, errors = 120, []
    inserted = threading.Event()

    def inserter(seed):
        try:
            rng = np.random.default_rng(seed)
            with InsertClient(srv.address, window=6, timeout_s=30) as ic:
                for _ in range(n_per_inserter):
                    ic.insert(make_trajectory(rng, n_steps=steps))
                ic.flush(60)
        except Exception as err:  # noqa: BLE001 - surfaced by the main thread
            errors.append(err)

    def sampler():
        try:
            with SampleClient(srv.address, timeout_s=30) as sc:
                while True:
                    sc.sample(3, timeout_ms=100)
                    if inserted.is_set() and sc.last_reply["status"] == "retry":
                        return
        except Exception as err:  # noqa: BLE001 - surfaced by the main thread
            errors.append(err)

    threads = [threading.Thread(target=inserter, args=(s,)) for s in (1, 2)]
    samplers = [threading.Thread(target=sampler) for _ in range(2)]
    try:
        for th in threads + samplers:
            th.start()
        for th in threads:
            th.join(90)
        inserted.set()
        for th in samplers:
            th.join(60)
        assert not errors, errors
        with srv.lock:
            lim = srv.shard.limiter
            state = lim.state()
            assert lim.inserts == 2 * n_per_inserter * steps
            assert lim.forced_inserts == 0
            # At every moment once sampling could begin: min_diff <= inserts·spi − samples <= max_diff.
            assert lim.min_diff <= state["seen_min_diff"] and state["seen_max_diff"] <= lim.max_diff
            assert abs(lim.samples - spi * lim.inserts) <= spi * min_size + eb
            assert srv.shard.stats()["samples"] == lim.samples
    finally:
        srv.stop()


def test_limiter_off_by_default_never_retries():
    shard = ReplayShard(capacity=10)
    shard.insert(encode(make_trajectory(np.random.default_rng(53))))
    for _ in range(100):
        assert shard.sample(8, np.random.default_rng(0)).status == "ok"
    assert "limiter" not in shard.stats()


def test_retry_reply_shape_over_raw_socket():
    srv = _limited_server()
    try:
        with SampleClient(srv.address, timeout_s=10) as sc:
            raw = sc.call(b"sample", msgpack.packb({"n": 1, "timeout_ms": 0}))
            assert raw["status"] == "retry" and raw["items"] == [] and raw["detail"] == "rate_limited"
    finally:
        srv.stop()
