"""RateLimiter: Reverb's SampleToInsertRatio, counted in steps.

State: `inserts` (steps ever stored), `deletes` (steps evicted), `samples` (steps ever drawn).
With spi = samples_per_insert, diff = inserts · spi − samples, and
min_diff = spi · min_size_to_sample − error_buffer, max_diff = spi · min_size_to_sample + error_buffer:

- an insert of k steps may proceed while the shard holds at most min_size_to_sample steps after
  it (filling up is free), or when diff + k · spi <= max_diff;
- a sample of n steps may proceed when the shard holds >= min_size_to_sample steps and
  diff − n >= min_diff.

So once sampling has begun, min_diff <= diff <= max_diff at every moment: samples per insert stay
within error_buffer / inserts of spi. A caller that may not proceed waits (the server holds the
request until the other side moves, or its timeout passes) or is told to retry.

Not guaranteed:
- Progress when a single trajectory is wider than the buffer (k · spi > 2 · error_buffer): such an
  insert would wait forever, so when samples are blocked too it is let through anyway and diff
  may then exceed max_diff by less than k · spi. Keep error_buffer >= spi · (longest trajectory).
- After a restart of a shard without a data_dir everything starts from zero; with one, the
  counts come back (samples are logged, buffer/durability/persistence.py) but the seen-diff extremes do not.
  A shard that a resume starts from a learner snapshot's replay gets the counts its file holds.
"""

from __future__ import annotations

from typing import Any


class RateLimiter:
    def __init__(self, samples_per_insert: float, min_size_to_sample: int = 1, error_buffer: float | None = None):
        if not samples_per_insert > 0:
            raise ValueError(f"samples_per_insert must be > 0, got {samples_per_insert}")
        if min_size_to_sample < 1:
            raise ValueError(f"min_size_to_sample must be >= 1, got {min_size_to_sample}")
        if error_buffer is None:
            error_buffer = max(1.0, samples_per_insert) * 64
        if error_buffer < max(1.0, samples_per_insert):
            raise ValueError(f"error_buffer must be >= max(1, samples_per_insert), got {error_buffer}")
        self.spi = float(samples_per_insert)
        self.min_size = int(min_size_to_sample)
        self.error_buffer = float(error_buffer)
        self.min_diff = self.spi * self.min_size - self.error_buffer
        self.max_diff = self.spi * self.min_size + self.error_buffer
        self.inserts = 0
        self.deletes = 0
        self.samples = 0
        self.forced_inserts = 0  # inserts let through to avoid a deadlock
        # The extremes diff reached once sampling was possible: what a test or a dashboard checks.
        self.seen_min_diff = float("inf")
        self.seen_max_diff = float("-inf")

    @property
    def size(self) -> int:
        return self.inserts - self.deletes

    @property
    def diff(self) -> float:
        return self.inserts * self.spi - self.samples

    def can_insert(self, k: int) -> bool:
        if self.size + k <= self.min_size:
            return True
        return self.diff + k * self.spi <= self.max_diff

    def can_sample(self, n: int) -> bool:
        return self.size >= self.min_size and self.diff - n >= self.min_diff

    def must_force(self, k: int) -> bool:
        """True when neither side can move: the insert goes through regardless."""
        return not self.can_insert(k) and not self.can_sample(1)

    def on_insert(self, k: int) -> None:
        if not self.can_insert(k):
            self.forced_inserts += 1
        self.inserts += k
        self._observe()

    def on_delete(self, k: int) -> None:
        self.deletes += k

    def on_sample(self, n: int) -> None:
        self.samples += n
        self._observe()

    def _observe(self) -> None:
        if self.size >= self.min_size:
            d = self.diff
            self.seen_min_diff = min(self.seen_min_diff, d)
            self.seen_max_diff = max(self.seen_max_diff, d)

    def state(self) -> dict[str, Any]:
        return {
            "samples_per_insert": self.spi,
            "min_size_to_sample": self.min_size,
            "error_buffer": self.error_buffer,
            "inserts": self.inserts,
            "deletes": self.deletes,
            "samples": self.samples,
            "diff": self.diff,
            "min_diff": self.min_diff,
            "max_diff": self.max_diff,
            "seen_min_diff": self.seen_min_diff if self.seen_min_diff != float("inf") else None,
            "seen_max_diff": self.seen_max_diff if self.seen_max_diff != float("-inf") else None,
            "forced_inserts": self.forced_inserts,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.inserts = int(state.get("inserts", 0))
        self.deletes = int(state.get("deletes", 0))
        self.samples = int(state.get("samples", 0))
