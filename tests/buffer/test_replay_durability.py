"""Durability in one process: log + snapshot restore everything acknowledged, torn tails and half
written snapshots are ignored, ingest goes on while a snapshot is being written."""

import threading
import time

import numpy as np
import pytest

from buffer.core.shard import ReplayShard
from buffer.durability import snapshot as snapshot_mod
from buffer.wire.schema import encode
from tests.support.trajectories import assert_same_trajectory, make_trajectory

pytestmark = pytest.mark.timeout(120)


_OPEN: list[ReplayShard] = []


@pytest.fixture(autouse=True)
def _close_shards():
    yield
    while _OPEN:
        _OPEN.pop().close()  # stops each shard's log writer thread


def _shard(path, restore_from=None, **cfg):
    config = {"data_dir": str(path), "snapshot_every_s": None, "alpha": 1.0}
    config.update(cfg)
    shard = ReplayShard(capacity=cfg.pop("capacity", 1000), config=config, restore_from=restore_from)
    _OPEN.append(shard)
    return shard


def _insert(shard, rng, n, **kw):
    trajs = [make_trajectory(rng, **kw) for _ in range(n)]
    for t in trajs:
        assert shard.insert(encode(t))["status"] == "stored"
    return trajs


def _assert_same_state(a, b):
    assert a.traj_ids() == b.traj_ids()
    for tid in a.traj_ids():
        assert_same_trajectory(a.get(tid), b.get(tid))
        np.testing.assert_array_equal(a.priorities_of(tid), b.priorities_of(tid))
    assert a.policy_version == b.policy_version
    assert a.sampler.total == pytest.approx(b.sampler.total, rel=1e-12)
    for key in ("size_steps", "stored", "stored_steps", "evicted", "inserts"):
        assert a.stats()[key] == b.stats()[key], key


def _update_some(shard, rng, k=10):
    ids = shard.traj_ids()
    chosen = [ids[i] for i in rng.choice(len(ids), size=k, replace=False)]
    keys = np.concatenate([shard.store.keys(shard.store.get(t).slots) for t in chosen])
    shard.update_priorities(keys, rng.random(len(keys)) * 5)


def test_restart_from_the_log_alone(tmp_path):
    rng = np.random.default_rng(80)
    a = _shard(tmp_path, recency_gamma=0.9)
    _insert(a, rng, 30, policy_version=2)
    _update_some(a, rng)
    a.set_policy_version(7)
    _insert(a, rng, 5, policy_version=7)
    b = _shard(tmp_path, recency_gamma=0.9)  # `a` never closed: as after kill -9
    _assert_same_state(a, b)
    assert b.stats()["restored_trajectories"] == 35


def test_restart_from_snapshot_plus_log_with_eviction(tmp_path):
    rng = np.random.default_rng(81)
    a = _shard(tmp_path, capacity=40, snapshot_every_inserts=25)
    _insert(a, rng, 30)
    assert a.maybe_snapshot()
    assert a.durability.snapshotter.wait(30) and a.durability.snapshotter.last_error is None
    _update_some(a, rng)
    _insert(a, rng, 30)  # evicts 20 of the snapshot's trajectories
    _update_some(a, rng)
    b = _shard(tmp_path, capacity=40)
    _assert_same_state(a, b)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files[0].startswith("log-") and any(f.endswith(".snap") for f in files)
    # The snapshot covers segment 1, which is deleted; replay used the later segments.
    assert "log-00000001.seg" not in files


def test_periodic_snapshots_compact_the_log(tmp_path):
    rng = np.random.default_rng(82)
    a = _shard(tmp_path, capacity=20, snapshot_every_inserts=10)
    for _ in range(6):
        _insert(a, rng, 10)
        a.maybe_snapshot()
        a.durability.snapshotter.wait(30)
    snaps = [p for p in tmp_path.iterdir() if p.suffix == ".snap"]
    segs = [p for p in tmp_path.iterdir() if p.suffix == ".seg"]
    assert len(snaps) == 1 and len(segs) <= 2  # older snapshots and covered segments are gone
    b = _shard(tmp_path, capacity=20)
    _assert_same_state(a, b)


def test_torn_tail_and_half_written_snapshot_are_ignored(tmp_path):
    rng = np.random.default_rng(83)
    a = _shard(tmp_path)
    _insert(a, rng, 10)
    a.maybe_snapshot(force=True)
    a.durability.snapshotter.wait(30)
    _insert(a, rng, 5)
    a.commit()
    seg = tmp_path / f"log-{a.durability.log.current:08d}.seg"
    with open(seg, "ab") as f:
        f.write(b"\x10\x00\x00\x00garbage")  # a record cut short by a crash
    (tmp_path / "snapshot-00000099.tmp").write_bytes(b"half a snapshot")
    (tmp_path / "snapshot-00000098.snap").write_bytes(b"\x00\x00")  # renamed but broken
    b = _shard(tmp_path)
    _assert_same_state(a, b)


def test_ingest_goes_on_while_a_snapshot_is_written(tmp_path, monkeypatch):
    rng = np.random.default_rng(84)
    release, entered = threading.Event(), threading.Event()
    real = snapshot_mod.write_snapshot

    def held(*args, **kwargs):
        entered.set()
        assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(snapshot_mod, "write_snapshot", held)
    a = _shard(tmp_path)
    first = _insert(a, rng, 10)
    assert a.maybe_snapshot(force=True)
    assert entered.wait(30)
    during = _insert(a, rng, 10)  # the snapshot is stuck in its thread: inserts still succeed
    _update_some(a, rng)
    assert not a.maybe_snapshot(force=True)  # one at a time
    release.set()
    assert a.durability.snapshotter.wait(30)
    b = _shard(tmp_path)
    _assert_same_state(a, b)
    assert {t.traj_id for t in first + during} == set(b.traj_ids())


def test_duplicate_after_restart_is_stored_once(tmp_path):
    rng = np.random.default_rng(85)
    a = _shard(tmp_path)
    (t,) = _insert(a, rng, 1)
    b = _shard(tmp_path)
    reply = b.insert(encode(t))
    assert reply["status"] == "stored" and reply["detail"] == "duplicate"
    assert b.traj_ids() == [t.traj_id] and b.stats()["duplicates"] == 1


def test_without_data_dir_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shard = ReplayShard(capacity=10)
    _insert(shard, np.random.default_rng(86), 3)
    assert shard.durability is None and "durability" not in shard.stats()
    assert list(tmp_path.iterdir()) == []


def test_a_batch_written_across_many_small_segments_restores(tmp_path):
    rng = np.random.default_rng(77)
    a = _shard(tmp_path, segment_bytes=1 << 16)
    trajs = [make_trajectory(rng) for _ in range(300)]
    for t in trajs:
        assert a.insert(encode(t), sync=False)["status"] == "stored"
    a.commit()  # one group commit: the writer splits the batch at segment boundaries
    segments = sorted(tmp_path.glob("log-*.seg"))
    assert len(segments) >= 3
    assert all(p.stat().st_size >= 1 << 16 for p in segments[:-1])
    b = _shard(tmp_path, segment_bytes=1 << 16)
    _assert_same_state(a, b)


# --- a shard's replay inside a learner snapshot: export_snapshot, then restore_from ---


def _exported(tmp_path, rng, **cfg):
    """A memory-only shard with priorities, recency, a limiter and samples taken, exported."""
    config = {"alpha": 1.0, "beta": 0.5, "recency_gamma": 0.9, "samples_per_insert": 2.0, "error_buffer": 1e6}
    config.update(cfg)
    a = ReplayShard(capacity=40, config=config)
    _insert(a, rng, 30, policy_version=2)
    _update_some(a, rng)
    a.set_policy_version(5)
    a.sample(16, rng)
    _insert(a, rng, 20, policy_version=5)  # evicts 10
    path = snapshot_mod.export_snapshot(tmp_path / "shard-0.snap", a.export_view())
    return a, path, config


def test_a_shard_starts_from_an_exported_snapshot(tmp_path):
    a, path, config = _exported(tmp_path, np.random.default_rng(90))
    b = ReplayShard(capacity=40, config=config, restore_from=path)
    _assert_same_state(a, b)
    counts = [{k: v for k, v in s.limiter.state().items() if not k.startswith("seen_")} for s in (a, b)]
    assert counts[0] == counts[1] and counts[0]["samples"] == 16  # seen-diff extremes start afresh
    assert b.stats()["restored_from"] == "snapshot" and b.stats()["restored_trajectories"] == 40
    assert b.stats()["samples"] == a.stats()["samples"]


def test_a_restored_snapshot_is_durable_before_the_shard_serves(tmp_path, monkeypatch):
    a, path, config = _exported(tmp_path, np.random.default_rng(91))
    real = snapshot_mod.write_snapshot

    def slow(*args, **kwargs):
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(snapshot_mod, "write_snapshot", slow)
    b = _shard(tmp_path / "data", capacity=40, **config, restore_from=path)
    assert len(list((tmp_path / "data").glob("snapshot-*.snap"))) == 1  # written before the constructor returned
    _assert_same_state(a, b)
    _insert(b, np.random.default_rng(92), 3, policy_version=5)
    path.unlink()  # from here on the shard's own directory is all there is
    c = _shard(tmp_path / "data", capacity=40, **config)
    _assert_same_state(b, c)
    assert c.stats()["restored_from"] == "log"


def test_the_shards_own_log_wins_over_the_snapshot_file(tmp_path):
    rng = np.random.default_rng(93)
    _, path, config = _exported(tmp_path, rng)
    a = _shard(tmp_path / "data", **config)
    _insert(a, rng, 7)
    b = _shard(tmp_path / "data", **config, restore_from=path)  # its log is at least as new
    _assert_same_state(a, b)
    assert b.stats()["restored_from"] == "log" and len(b) == 7


def test_a_missing_or_broken_snapshot_file_is_a_named_error(tmp_path):
    _, path, config = _exported(tmp_path, np.random.default_rng(94))
    with pytest.raises(FileNotFoundError, match="nowhere.snap"):
        ReplayShard(capacity=40, config=config, restore_from=tmp_path / "nowhere.snap")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        ReplayShard(capacity=40, config=config, restore_from=path)


def test_a_replay_of_two_shards_restores_onto_three_by_route(tmp_path):
    from buffer.routing import route_key, shard_for

    rng = np.random.default_rng(95)
    config = {"alpha": 1.0, "group_size": 2}
    old = [ReplayShard(capacity=100, config=config) for _ in range(2)]
    for g in range(12):
        for _ in range(2):
            t = make_trajectory(rng, group_id=f"g{g}")
            old[shard_for(route_key(t.traj_id, t.group_id), 2)].insert(encode(t))
    for s in old:
        _update_some(s, rng, k=4)
    old[1].set_policy_version(6)
    files = [snapshot_mod.export_snapshot(tmp_path / f"shard-{i}.snap", s.export_view()) for i, s in enumerate(old)]
    new = [ReplayShard(capacity=100, config=config, restore_from=files, route=(i, 3)) for i in range(3)]

    held = {tid: s for s in old for tid in s.traj_ids()}
    assert sorted(t for s in new for t in s.traj_ids()) == sorted(held)
    for i, s in enumerate(new):
        for tid in s.traj_ids():
            traj = s.get(tid)
            assert shard_for(route_key(tid, traj.group_id), 3) == i
            np.testing.assert_array_equal(s.priorities_of(tid), held[tid].priorities_of(tid))
        assert s.policy_version == 6 and s.stats()["groups_complete"] == len(s) // 2
    assert sum(s.stats()["restored_trajectories"] for s in new) == 24
    with pytest.raises(ValueError, match="need a route"):
        ReplayShard(capacity=100, config=config, restore_from=files)
