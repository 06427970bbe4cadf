"""Sum and min trees against brute force: totals, prefix search, lazy propagation, growth."""

import numpy as np
import pytest

from buffer.core.sumtree import MinTree, SumTree
from tests.support.trajectories import chi_square


def test_total_and_min_follow_random_writes():
    rng = np.random.default_rng(0)
    n = 1000
    s, m = SumTree(n), MinTree(n)
    ref = np.zeros(s.capacity)
    for step in range(300):
        k = int(rng.integers(1, 50)) if step % 10 else n  # mostly small bursts, some full ones
        idx = rng.integers(0, n, size=k)
        vals = rng.random(k) * 10
        vals[rng.random(k) < 0.2] = 0.0
        s[idx] = vals
        m[idx] = np.where(vals > 0, vals, np.inf)
        ref[idx] = vals  # numpy: the last write of a repeated index wins, as in the tree
        if step % 7 == 0:
            assert s.total == pytest.approx(ref.sum(), rel=1e-12)
            positive = ref[ref > 0]
            assert m.min == (positive.min() if positive.size else np.inf)
    assert s.total == pytest.approx(ref.sum(), rel=1e-12)


def test_find_matches_cumsum_search():
    rng = np.random.default_rng(1)
    vals = rng.random(777)
    vals[rng.random(777) < 0.3] = 0.0
    s = SumTree(777)
    s[np.arange(777)] = vals
    u = rng.random(5000) * vals.sum()
    expected = np.searchsorted(np.cumsum(vals), u, side="right")
    got = s.find(u)
    # Away from boundaries (where float rounding may differ) the leaf is the same...
    cum = np.cumsum(vals)
    far = np.min(np.abs(cum[None, :] - u[:, None]), axis=1) > 1e-9
    np.testing.assert_array_equal(got[far], expected[far])
    # ...and a zero leaf is never returned.
    assert (vals[got] > 0).all()


def test_sample_distribution():
    vals = np.array([0.0, 1.0, 2.0, 0.0, 3.0, 10.0, 0.5])
    s = SumTree(len(vals))
    s[np.arange(len(vals))] = vals
    idx = s.sample(50_000, np.random.default_rng(3))
    counts = np.bincount(idx, minlength=len(vals))
    assert counts[[0, 3]].sum() == 0
    nz = vals > 0
    stat, crit = chi_square(counts[nz], vals[nz] / vals[nz].sum())
    assert stat < crit
    assert chi_square(counts[nz], np.full(nz.sum(), 1 / nz.sum()))[0] > crit


def test_grown_keeps_leaves_and_sampling_of_empty_tree_fails():
    s = SumTree(3)
    s[np.array([0, 2])] = [1.0, 2.0]
    big = s.grown(100)
    assert big.capacity == 128 and big.total == 3.0
    assert big[np.array([0, 1, 2])].tolist() == [1.0, 0.0, 2.0]
    with pytest.raises(ValueError):
        SumTree(4).sample(1, np.random.default_rng(0))


def test_set_all_rebuilds():
    s = SumTree(5)
    s.set_all(np.array([1.0, 2.0, 3.0]))
    assert s.total == 6.0 and s.capacity == 8
    m = MinTree(5)
    m.set_all(np.array([4.0, 2.0, 3.0]))
    assert m.min == 2.0
