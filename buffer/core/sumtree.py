"""Sum and min trees over a fixed number of leaves, in numpy, batched.

A complete binary tree in one float64 array: node 1 is the root, node k has children 2k and 2k+1,
leaf j is node `size + j`. Writes go to the leaves at once and are propagated lazily: the first
query after a burst of writes walks the touched paths up one level at a time, vectorized over all
touched nodes (or rebuilds every level when most leaves were touched). So a write costs O(1) and
the next query O(k log n) for k touched leaves, in a few numpy calls per level rather than a Python
loop per leaf. Sampling descends the tree for a whole batch at once: O(batch · log n).

Not guaranteed:
- Thread safety: one writer and no concurrent readers (callers hold the shard's lock).
- Exact sums: float64, recomputed from the children on every propagation (no running deltas, so
  no drift), but a sum of 10^6 values carries ~1e-10 relative rounding.
- `find` on a tree whose total is 0 (nothing sampleable) is an error; callers check `total`.
- Leaves must be finite and >= 0 (sum tree); nothing checks it here.
"""

from __future__ import annotations

import numpy as np


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class SegmentTree:
    """Shared machinery: leaves, lazy propagation, full rebuild. `op` is np.add or np.minimum."""

    def __init__(self, capacity: int, op: np.ufunc, neutral: float):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.size = _pow2_at_least(capacity)
        self.depth = self.size.bit_length() - 1
        self._op, self._neutral = op, neutral
        self._t = np.full(2 * self.size, neutral, dtype=np.float64)
        self._dirty: list[np.ndarray] = []
        self._n_dirty = 0

    @property
    def capacity(self) -> int:
        return self.size

    def leaves(self) -> np.ndarray:
        """Read-only view of the leaf values (always current, even before propagation)."""
        view = self._t[self.size :]
        view.flags.writeable = False
        return view

    def __getitem__(self, idx: np.ndarray | int) -> np.ndarray | float:
        return self._t[self.size + np.asarray(idx)]

    def __setitem__(self, idx: np.ndarray | int, values: np.ndarray | float) -> None:
        idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        if idx.size == 0:
            return
        self._t[self.size + idx] = values
        self._dirty.append(idx)
        self._n_dirty += idx.size

    def set_all(self, values: np.ndarray) -> None:
        """Replace every leaf (len(values) <= capacity, the rest get the neutral value)."""
        self._t[self.size :] = self._neutral
        self._t[self.size : self.size + len(values)] = values
        self._dirty.clear()
        self._n_dirty = 0
        self._rebuild()

    def _rebuild(self) -> None:
        t, lo = self._t, self.size
        while lo > 1:
            children = t[lo : 2 * lo]
            t[lo // 2 : lo] = self._op(children[0::2], children[1::2])
            lo //= 2

    def flush(self) -> None:
        """Propagate pending leaf writes to the root."""
        if not self._dirty:
            return
        if self._n_dirty * 4 >= self.size:  # cheaper to redo every level
            self._dirty.clear()
            self._n_dirty = 0
            self._rebuild()
            return
        nodes = np.unique(np.concatenate(self._dirty) + self.size) >> 1
        self._dirty.clear()
        self._n_dirty = 0
        t, op = self._t, self._op
        while nodes[0] >= 1:
            nodes = np.unique(nodes)
            t[nodes] = op(t[2 * nodes], t[2 * nodes + 1])
            if nodes[0] == 1:
                break
            nodes >>= 1

    def root(self) -> float:
        self.flush()
        return float(self._t[1])

    def grown(self, capacity: int) -> SegmentTree:
        """A copy with room for `capacity` leaves (existing leaves kept)."""
        bigger = type(self)(capacity)
        bigger.set_all(self._t[self.size :])
        return bigger


class SumTree(SegmentTree):
    def __init__(self, capacity: int):
        super().__init__(capacity, np.add, 0.0)

    @property
    def total(self) -> float:
        return self.root()

    def find(self, mass: np.ndarray) -> np.ndarray:
        """Leaf index for each prefix mass u in [0, total): the leaf j with
        sum(leaves[:j]) <= u < sum(leaves[:j+1]). Never returns a zero leaf: where rounding
        would step into an empty subtree the descent stays left."""
        self.flush()
        u = np.array(mass, dtype=np.float64, copy=True)
        idx = np.ones(u.shape, dtype=np.int64)
        t = self._t
        for _ in range(self.depth):
            left = idx << 1
            left_sum = t[left]
            right = (u >= left_sum) & (t[left + 1] > 0)
            u -= np.where(right, left_sum, 0.0)
            idx = left + right
        return idx - self.size

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n leaf indices drawn i.i.d. with probability leaf / total (with replacement)."""
        total = self.total
        if not total > 0:
            raise ValueError("cannot sample from a tree whose total is 0")
        return self.find(rng.random(n) * total)


class MinTree(SegmentTree):
    def __init__(self, capacity: int):
        super().__init__(capacity, np.minimum, np.inf)

    @property
    def min(self) -> float:
        return self.root()
