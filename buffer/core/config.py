"""ReplayConfig: every knob of one replay shard, flat; BufferConfig: the launcher's view of the
replay (`configs/buffer/*.yaml`, one Hydra map), that is ReplayConfig plus how many shards to
start and how often Ray restarts a crashed one.

Defaults reproduce the thin shard: uniform sampling over steps, FIFO eviction, no limiter, no
gate, nothing on disk. Every default lives here, once. `from_dict` refuses unknown keys, so a
typo in a config file fails at start-up instead of silently doing nothing; a shard takes only its
own part (`BufferConfig.replay()`), so `shards` or `max_restarts` given to a shard are refused too.
The annotations are the ones OmegaConf accepts (plain types, `X | None`), so both classes can be
Hydra structured configs.

Not guaranteed: the values are checked for type and range only here; combinations that cannot
make progress (e.g. a limiter whose error buffer is narrower than one trajectory) are documented
in `buffer/core/limiter.py`, not refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from buffer.wire.schema import DEFAULT_MAX_FRAME_BYTES


@dataclass
class ReplayConfig:
    # storage
    capacity: int = 20_000  # trajectories per shard; the oldest stored is evicted first
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    # filters at insert (buffer/core/filters.py)
    success_only: bool = False
    same_screenshot: bool = False  # drop steps whose action left the screenshot unchanged
    min_steps: int = 1  # fewer steps (after step filters) -> filtered "min_steps"
    drop_empty: bool = False  # no response token in any step -> filtered "empty"
    min_token_length: int = 0  # steps with fewer response tokens are dropped
    # prioritized sampling (buffer/core/sampler.py)
    alpha: float = 0.0  # probability ∝ priority^alpha (0 = ignore priorities)
    beta: float = 0.0  # importance weights (min_a / a_i)^beta (0 = all 1)
    initial_priority: float | None = None  # None: the largest priority seen so far (1.0 at first)
    # recency (buffer/core/recency.py)
    recency_gamma: float | None = None  # γ^(V − v); None or 1.0 = off
    recency_power: float | None = None  # WebGym (i + 1)^power over the last `recency_window`
    recency_window: int | None = None
    rebase_every: int | None = None  # versions between forced rebases of the γ^(−v) leaves
    max_staleness: int | None = None  # gate: never sample steps older than this many versions
    # rate limiter (buffer/core/limiter.py); None = no limiter
    samples_per_insert: float | None = None
    min_size_to_sample: int = 1  # steps stored before the first sample
    error_buffer: float | None = None  # None: max(1, samples_per_insert) * 64
    insert_timeout_s: float = 5.0  # a blocked insert is answered "retry" after this long
    sample_timeout_s: float = 0.0  # default wait of a blocked sample before "retry"
    # GRPO groups (buffer/core/groups.py); None = group sampling off
    group_size: int | None = None
    # durability (buffer/durability/persistence.py); None = in memory only
    data_dir: str | None = None
    snapshot_every_s: float | None = 60.0
    snapshot_every_inserts: int | None = None
    segment_bytes: int = 64 << 20
    fsync: bool = True

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity}")
        if self.min_steps < 0 or self.min_token_length < 0:
            raise ValueError("min_steps and min_token_length must be >= 0")
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got {self.alpha}, {self.beta}")
        if self.initial_priority is not None and not self.initial_priority >= 0:
            raise ValueError(f"initial_priority must be >= 0, got {self.initial_priority}")
        if self.samples_per_insert is not None and not self.samples_per_insert > 0:
            raise ValueError(f"samples_per_insert must be > 0, got {self.samples_per_insert}")
        if self.group_size is not None and self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if self.segment_bytes < 1 << 16:
            raise ValueError(f"segment_bytes must be >= 64 KiB, got {self.segment_bytes}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None = None, **overrides: Any) -> ReplayConfig:
        merged = dict(values or {})
        merged.update(overrides)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"unknown replay config keys: {unknown}")
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class BufferConfig(ReplayConfig):
    """The replay as the launcher starts it: every shard gets `replay()`."""

    shards: int = 1  # replay shards; a trajectory goes to its group's shard (buffer/routing.py)
    max_restarts: int = 3  # Ray restarts a crashed shard this many times, on the same address

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shards < 1:
            raise ValueError(f"shards must be >= 1, got {self.shards}")

    def replay(self) -> ReplayConfig:
        """The shard's part: every ReplayConfig field as set here."""
        return ReplayConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ReplayConfig)})
