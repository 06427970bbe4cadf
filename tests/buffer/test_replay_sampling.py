"""Sampling distributions of a shard match their targets: chi-square tests with fixed seeds for
priorities, each recency form, and their products; importance weights; priority updates; the
staleness gate. Each test also checks that the statistic rejects a wrong target (it can fail)."""

from collections import Counter

import numpy as np
import pytest

from buffer.core.shard import ReplayShard
from buffer.wire.schema import encode
from tests.support.trajectories import chi_square, make_trajectory

N_DRAWS = 40_000


def _fill(shard, rng, versions, steps_per_traj=1):
    """One trajectory per entry of `versions`; returns their traj_ids in order."""
    ids = []
    for v in versions:
        t = make_trajectory(rng, n_steps=steps_per_traj, policy_version=v, success=True)
        assert shard.insert(encode(t))["status"] == "stored"
        ids.append(t.traj_id)
    return ids


def _set_priorities(shard, ids, priorities):
    keys = np.concatenate([shard.store.keys(shard.store.get(t).slots) for t in ids])
    per_step = np.repeat(priorities, [len(shard.store.get(t).slots) for t in ids])
    assert shard.update_priorities(keys, per_step)["updated"] == len(keys)


def _draw_counts(shard, ids, seed, n=N_DRAWS):
    rng = np.random.default_rng(seed)
    counts = Counter()
    for _ in range(n // 1000):
        counts.update(it["traj_id"] for it in shard.sample(1000, rng))
    return np.array([counts[t] for t in ids]), counts


def _assert_matches(observed, target, wrong=None):
    target = np.asarray(target, float) / np.sum(target)
    stat, crit = chi_square(observed, target)
    assert stat < crit, f"chi2 {stat:.1f} >= {crit:.1f}: {observed / observed.sum()} vs {target}"
    if wrong is not None:  # the same counts must reject a different distribution
        wrong = np.asarray(wrong, float) / np.sum(wrong)
        assert chi_square(observed, wrong)[0] > crit


def test_uniform_by_default_over_steps():
    rng = np.random.default_rng(10)
    shard = ReplayShard(capacity=100)
    ids = [_fill(shard, rng, [0], steps_per_traj=k)[0] for k in (1, 2, 3, 4)]
    observed, _ = _draw_counts(shard, ids, seed=11)
    _assert_matches(observed, [1, 2, 3, 4], wrong=[1, 1, 1, 1])


def test_priorities_to_the_alpha():
    rng = np.random.default_rng(12)
    shard = ReplayShard(capacity=100, config={"alpha": 0.7})
    ids = _fill(shard, rng, [0] * 10)
    p = np.arange(1, 11, dtype=float)
    _set_priorities(shard, ids, p)
    observed, _ = _draw_counts(shard, ids, seed=13)
    _assert_matches(observed, p**0.7, wrong=p)


def test_exponential_recency():
    rng = np.random.default_rng(14)
    gamma = 0.7
    shard = ReplayShard(capacity=100, config={"recency_gamma": gamma})
    versions = [0, 1, 2, 3, 4, 5, 5, 3]
    ids = _fill(shard, rng, versions)
    observed, _ = _draw_counts(shard, ids, seed=15)
    target = gamma ** (5 - np.array(versions, float))
    _assert_matches(observed, target, wrong=np.ones(len(ids)))
    assert shard.sampler.rebuilds == 0  # V advanced 5 times, no leaf was re-weighted


def test_exponential_recency_survives_rebases():
    rng = np.random.default_rng(16)
    gamma = 0.8
    shard = ReplayShard(capacity=100, config={"recency_gamma": gamma, "rebase_every": 3})
    versions = list(range(0, 20, 2)) + [19]
    ids = _fill(shard, rng, versions)
    assert shard.sampler.rebuilds >= 5 and shard.recency.ref >= 15
    observed, _ = _draw_counts(shard, ids, seed=17)
    target = gamma ** (19 - np.array(versions, float))
    _assert_matches(observed, target, wrong=gamma ** (19 - np.array(versions, float)) ** 0.5)


def test_exponential_rebases_itself_before_overflow():
    rng = np.random.default_rng(18)
    shard = ReplayShard(capacity=10, config={"recency_gamma": 0.01})  # γ^-v overflows by v≈154
    ids = _fill(shard, rng, [0, 400, 799, 800])
    assert np.isfinite(shard.sampler.total) and shard.recency.ref > 0
    observed, _ = _draw_counts(shard, ids, seed=19, n=4000)
    assert observed[0] == observed[1] == 0  # 0.01^400 is 0 in float64
    _assert_matches(observed[2:], [0.01, 1.0], wrong=[1, 1])


def test_power_law_over_last_window():
    rng = np.random.default_rng(20)
    shard = ReplayShard(capacity=100, config={"recency_power": 2.0, "recency_window": 4})
    versions = [v for v in range(6) for _ in range(3)]  # 3 steps per version, versions 0..5
    ids = _fill(shard, rng, versions)
    observed, _ = _draw_counts(shard, ids, seed=21)
    per_version = observed.reshape(6, 3).sum(axis=1)
    assert per_version[0] == per_version[1] == 0  # outside the last 4 versions
    shares = per_version[2:] / per_version.sum()
    _assert_matches(per_version[2:], [1, 4, 9, 16], wrong=[1, 2, 3, 4])
    np.testing.assert_allclose(shares, np.array([1, 4, 9, 16]) / 30, atol=0.02)  # WebGym's 3 / 13 / 30 / 53 %


def test_power_law_follows_version_advances():
    rng = np.random.default_rng(22)
    shard = ReplayShard(capacity=100, config={"recency_power": 1.0, "recency_window": 3})
    ids = _fill(shard, rng, [0, 1, 2])
    before, _ = _draw_counts(shard, ids, seed=23, n=6000)
    _assert_matches(before, [1, 2, 3])
    shard.set_policy_version(3)  # the learner moved on: version 0 leaves the window
    after, _ = _draw_counts(shard, ids, seed=24, n=6000)
    assert after[0] == 0
    _assert_matches(after[1:], [1, 2], wrong=[2, 3])


def test_priorities_times_exponential_recency():
    rng = np.random.default_rng(25)
    alpha, gamma = 0.5, 0.6
    shard = ReplayShard(capacity=100, config={"alpha": alpha, "recency_gamma": gamma})
    versions = np.array([0, 1, 2, 3, 4, 4, 2, 0])
    ids = _fill(shard, rng, versions.tolist())
    p = np.array([9.0, 4.0, 1.0, 0.5, 2.0, 1.0, 16.0, 25.0])
    _set_priorities(shard, ids, p)
    observed, _ = _draw_counts(shard, ids, seed=26)
    _assert_matches(observed, p**alpha * gamma ** (4 - versions), wrong=p**alpha)


def test_priorities_times_power_law_times_exponential():
    rng = np.random.default_rng(27)
    cfg = {"alpha": 1.0, "recency_gamma": 0.8, "recency_power": 1.5, "recency_window": 3}
    shard = ReplayShard(capacity=100, config=cfg)
    versions = np.array([1, 2, 3, 3, 2, 1])
    ids = _fill(shard, rng, versions.tolist())
    p = np.array([4.0, 1.0, 1.0, 3.0, 2.0, 1.0])
    _set_priorities(shard, ids, p)
    observed, _ = _draw_counts(shard, ids, seed=28)
    i = versions - 1  # window of 3 ending at V=3: versions 1,2,3 are i = 0,1,2
    target = p * 0.8 ** (3 - versions) * (i + 1.0) ** 1.5
    _assert_matches(observed, target, wrong=p * (i + 1.0) ** 1.5)


def test_importance_weights_and_probabilities():
    rng = np.random.default_rng(29)
    alpha, beta = 0.6, 0.4
    shard = ReplayShard(capacity=100, config={"alpha": alpha, "beta": beta})
    ids = _fill(shard, rng, [0] * 5)
    p = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    _set_priorities(shard, ids, p)
    items = shard.sample(500, np.random.default_rng(30))
    by_id = dict(zip(ids, p))
    a = p**alpha
    assert len(items) == len(items.weights) == len(items.probabilities) == 500
    for it, w, prob in zip(items, items.weights, items.probabilities, strict=True):
        a_i = by_id[it["traj_id"]] ** alpha
        assert w == pytest.approx((a.min() / a_i) ** beta)
        assert it["loss_weight"] == pytest.approx(w)
        assert prob == pytest.approx(a_i / a.sum())
    assert items.weights.max() <= 1.0 + 1e-12
    assert items.priorities.tolist() == [by_id[it["traj_id"]] for it in items]


def test_weights_do_not_undo_recency():
    rng = np.random.default_rng(31)
    shard = ReplayShard(capacity=10, config={"alpha": 1.0, "beta": 1.0, "recency_gamma": 0.5})
    _fill(shard, rng, [0, 3])  # same priority, different versions
    items = shard.sample(200, np.random.default_rng(32))
    assert np.allclose(items.weights, 1.0)  # recency is the intended distribution


def test_priority_update_moves_the_distribution_and_stale_keys_are_counted():
    rng = np.random.default_rng(33)
    shard = ReplayShard(capacity=3, config={"alpha": 1.0})
    ids = _fill(shard, rng, [0, 0, 0])
    _set_priorities(shard, ids, np.array([1.0, 1.0, 8.0]))
    observed, _ = _draw_counts(shard, ids, seed=34, n=10_000)
    _assert_matches(observed, [1, 1, 8], wrong=[1, 1, 1])
    old_key = shard.store.keys(shard.store.get(ids[0]).slots)
    _fill(shard, rng, [0])  # evicts ids[0]; its slot is reused by the newcomer
    reply = shard.update_priorities(old_key, [100.0])
    assert reply == {"status": "ok", "updated": 0, "stale": 1}
    assert shard.stats()["stale_keys"] == 1
    with pytest.raises(ValueError):
        shard.update_priorities(old_key, [float("nan")])
    with pytest.raises(ValueError):
        shard.update_priorities(old_key, [-1.0])


def test_new_steps_get_the_largest_priority_seen():
    rng = np.random.default_rng(35)
    shard = ReplayShard(capacity=10, config={"alpha": 1.0})
    ids = _fill(shard, rng, [0, 0])
    _set_priorities(shard, ids, np.array([5.0, 0.5]))
    new = _fill(shard, rng, [0])
    assert shard.priorities_of(new[0]).tolist() == [5.0]
    fixed = ReplayShard(capacity=10, config={"alpha": 1.0, "initial_priority": 0.25})
    assert fixed.priorities_of(_fill(fixed, rng, [0])[0]).tolist() == [0.25]


def test_staleness_gate():
    rng = np.random.default_rng(36)
    shard = ReplayShard(capacity=100, config={"max_staleness": 2})
    ids = _fill(shard, rng, [0, 1, 2, 3, 4, 5])
    observed, _ = _draw_counts(shard, ids, seed=37, n=6000)
    assert observed[:3].sum() == 0  # versions 0..2 are more than 2 behind V=5
    _assert_matches(observed[3:], [1, 1, 1])
    late = make_trajectory(rng, n_steps=1, policy_version=1)
    reply = shard.insert(encode(late))
    assert reply["status"] == "filtered" and reply["filter"] == "stale"
    assert shard.stats()["filtered"] == {"stale": 1}
    assert shard.stats()["mean_staleness"] <= 2


def test_nothing_drawable_is_empty_not_an_error():
    rng = np.random.default_rng(38)
    shard = ReplayShard(capacity=10, config={"alpha": 1.0})
    ids = _fill(shard, rng, [0])
    _set_priorities(shard, ids, np.array([0.0]))
    items = shard.sample(5, rng)
    assert items == [] and items.status == "empty"
