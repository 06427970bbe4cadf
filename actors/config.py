"""RolloutConfig: the `rollout` config group, how rollout actors generate and send episodes.

Each default lives here and only here (launch registers the class as a Hydra structured config,
so an unknown key is refused by name). Imports nothing heavy.

NOT guaranteed: `constraint` and the legacy `constrained` are checked when an actor starts
(actors/decoding.py: constraint_mode), not here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RolloutConfig:
    actors: int = 1
    slots: int = 4            # env slots per actor; the engine batches whichever are not waiting for a page
    temperature: float = 1.0
    max_tokens: int = 24
    history: int = 2          # earlier rounds summarized in the prompt, one line each (-1: all)
    history_window: int = 0   # the last N rounds shown whole (observation + action), WebGym keeps 4
    constraint: str | None = None  # choice: the page's valid actions | grammar: the action language | none; null: choice
    constrained: bool | None = None  # legacy bool (true: choice, false: none), still read; an error if it contradicts constraint
    insert_window: int = 64   # unacknowledged inserts in flight per shard (backpressure)
    call_timeout_s: float = 120.0
    min_batch: int = 1        # engine waits for pages while fewer requests are in flight (1: never waits)
    group_size: int = 1       # consecutive episodes per task instance (same seed): GRPO's group
    max_staleness: int | None = 4  # start no episode older than this (versions) when the learner can use it; null: off
    max_restarts: int = 3     # Ray restarts a crashed actor; the learner's next sync reconnects and starts it
