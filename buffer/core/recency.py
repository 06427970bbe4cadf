"""Recency weights of stored steps by policy version: the factor each step's priority is multiplied
by in the sum tree.

With V the newest policy version the shard knows and v a step's version (age V − v):
- exponential: γ^(V − v). Stored as γ^(ref − v) for a fixed reference version `ref`, so when V
  advances nothing is re-weighted: every leaf would be scaled by the same γ^(V − ref), which
  cancels in the sampling probabilities. Only when γ^(ref − V) would leave float64's comfortable
  range (or, via `rebase_every`, sooner) is `ref` moved to V and every leaf recomputed once.
- power law (WebGym): over the last `window` versions, the step of version v = V − window + 1 + i
  (i = 0 oldest … window − 1 newest) gets (i + 1)^power; older steps get 0. Power 2 over a window
  of 4 gives per-version weights 1, 4, 9, 16 = 3.3 / 13.3 / 30 / 53.3 % of the draws when each
  version holds the same number of steps (and the same priority mass).
- staleness gate: steps with age > `max_staleness` get 0 (never sampled).
The factors multiply. These depend on V, so when V advances the shard recomputes every leaf
(one vectorized pass, O(n), only when V changes and only if one of them is on).

Not guaranteed:
- The power law weights steps, not versions: a version holding twice the steps gets twice the
  share. (Per-version shares that ignore counts would need per-version trees.)
- Steps whose version is newer than V (an actor ahead of what the shard heard) count as age 0.
- Exponential factors of very old steps underflow to 0 (age ≳ 700/−ln γ): they stop being drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_MAX_LOG_SCALE = 200.0  # rebase before γ^(ref − V) passes e^200 ≈ 1e87 (float64 max ≈ 1e308)


@dataclass
class Recency:
    gamma: float | None = None  # exponential decay per version, in (0, 1]; None = off
    power: float | None = None  # power-law exponent; None = off
    window: int | None = None  # versions the power law covers (needed with power)
    max_staleness: int | None = None  # gate; None = off
    rebase_every: int | None = None  # force a rebase every this many versions (None: as needed)
    ref: int = 0  # the exponential form's reference version

    def __post_init__(self) -> None:
        if self.gamma is not None and not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"recency gamma must be in (0, 1], got {self.gamma}")
        if self.power is not None:
            if not self.power >= 0:
                raise ValueError(f"recency power must be >= 0, got {self.power}")
            if self.window is None or self.window < 1:
                raise ValueError(f"the power law needs window >= 1, got {self.window}")
        if self.max_staleness is not None and self.max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {self.max_staleness}")

    @property
    def exponential(self) -> bool:
        return self.gamma is not None and self.gamma < 1.0

    @property
    def depends_on_version(self) -> bool:
        """True when the factors change as V advances (power law or gate on)."""
        return self.power is not None or self.max_staleness is not None

    @property
    def enabled(self) -> bool:
        return self.exponential or self.depends_on_version

    def factors(self, versions: np.ndarray, newest: int) -> np.ndarray:
        """Leaf multipliers for steps at `versions` when the newest version is `newest`."""
        versions = np.asarray(versions, dtype=np.int64)
        out = np.ones(versions.shape, dtype=np.float64)
        if self.exponential:
            out *= np.power(self.gamma, (self.ref - versions).astype(np.float64))
        if self.depends_on_version:
            age = np.maximum(newest - versions, 0)
            if self.power is not None:
                i = self.window - 1 - age  # 0 = oldest version in the window
                out *= np.where(i >= 0, (np.maximum(i, 0) + 1.0) ** self.power, 0.0)
            if self.max_staleness is not None:
                out *= age <= self.max_staleness
        return out

    def scale_to(self, newest: int) -> float:
        """Multiply stored masses by this to get them at γ^(V − v): γ^(V − ref)."""
        if not self.exponential:
            return 1.0
        return math.exp((newest - self.ref) * math.log(self.gamma))

    def needs_rebase(self, newest: int) -> bool:
        if not self.exponential:
            return False
        if self.rebase_every is not None and newest - self.ref >= self.rebase_every:
            return True
        return (newest - self.ref) * -math.log(self.gamma) > _MAX_LOG_SCALE

    def is_stale(self, version: int, newest: int) -> bool:
        return self.max_staleness is not None and newest - version > self.max_staleness
