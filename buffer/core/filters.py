"""Filters at insert: which trajectories (and which of their steps) a shard keeps.

Each filter is switchable and has a name; the shard counts trajectories filtered by name
(`stats()["filtered"]`) and steps dropped by name (`stats()["filtered_steps"]`). They run in this
order on a decoded, valid trajectory:

1. `success_only`: an unsuccessful trajectory is filtered.
2. `same_screenshot`: step t is dropped when its screenshot hash equals step t+1's (its action
   changed nothing visible). The last step is always kept; steps without a hash are kept.
3. `min_token_length`: steps with fewer response tokens than this are dropped.
4. `min_steps`: a trajectory left with fewer steps than this is filtered.
5. `drop_empty`: a trajectory without a single response token is filtered as "empty".

Invalid frames never reach the filters: a frame with no steps, a missing field or a None where
a value belongs is rejected by `buffer.wire.decode.decode` with a named error (missing_field,
wrong_type, …) and counted under `rejected`.

Not guaranteed:
- Dropping steps renumbers them: a sample's `step_index` indexes the stored trajectory, not the
  one the actor sent. The stored (filtered) trajectory is what the log and snapshots hold.
- Filters see one trajectory at a time: nothing here looks across trajectories or groups.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

from buffer.wire.schema import Step, Trajectory

SUCCESS_ONLY = "success_only"
SAME_SCREENSHOT = "same_screenshot"
MIN_TOKEN_LENGTH = "min_token_length"
MIN_STEPS = "min_steps"
EMPTY = "empty"
NAMES = (SUCCESS_ONLY, SAME_SCREENSHOT, MIN_TOKEN_LENGTH, MIN_STEPS, EMPTY)
_NONE: Counter = Counter()  # shared "nothing dropped"; never mutated


@dataclass
class FilterResult:
    traj: Trajectory | None  # the trajectory to store (maybe with fewer steps); None if filtered
    reason: str | None  # the filter that dropped the whole trajectory
    dropped_steps: Counter  # steps dropped, by filter name


@dataclass
class Filters:
    success_only: bool = False
    same_screenshot: bool = False
    min_token_length: int = 0
    min_steps: int = 1
    drop_empty: bool = False

    def apply(self, traj: Trajectory) -> FilterResult:
        if self.success_only and not traj.success:
            return FilterResult(None, SUCCESS_ONLY, _NONE)
        if not (self.same_screenshot or self.min_token_length or self.drop_empty) and len(traj.steps) >= self.min_steps:
            return FilterResult(traj, None, _NONE)  # nothing else to check: the common case
        dropped: Counter = Counter()
        steps = traj.steps
        if self.same_screenshot:
            steps = _drop_unchanged(steps, dropped)
        if self.min_token_length > 0:
            kept = [s for s in steps if len(s.response_ids) >= self.min_token_length]
            dropped[MIN_TOKEN_LENGTH] += len(steps) - len(kept)
            steps = kept
        if len(steps) < max(self.min_steps, 1):
            # Too short as sent, or shortened by the step filters (counted in dropped_steps).
            return FilterResult(None, MIN_STEPS, dropped)
        if self.drop_empty and not any(len(s.response_ids) for s in steps):
            return FilterResult(None, EMPTY, dropped)
        if len(steps) != len(traj.steps):
            traj = dataclasses.replace(traj, steps=steps)
        return FilterResult(traj, None, +dropped)


def _drop_unchanged(steps: list[Step], dropped: Counter) -> list[Step]:
    kept = []
    for i, step in enumerate(steps):
        nxt = steps[i + 1].screenshot_hash if i + 1 < len(steps) else None
        if step.screenshot_hash is not None and step.screenshot_hash == nxt:
            dropped[SAME_SCREENSHOT] += 1
        else:
            kept.append(step)
    return kept

