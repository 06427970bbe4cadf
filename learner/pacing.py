"""How much the learner draws per step (steps, or whole groups), and when it must wait.

The learner waits until the replay holds `min_replay_steps` steps (or, drawing groups, one
complete group), and keeps the steps all ranks have drawn within `samples_per_insert` × the steps
the shards have stored, so a fast learner cannot over-fit the first few episodes while the actors
are still collecting. (How a draw is split over the shards: buffer/sharded.py.)

NOT guaranteed: an exact ratio — the check counts whole batches, and with groups the batch's step
count is estimated as episodes (one step each) before the draw.
"""

from __future__ import annotations


class Pacing:
    def __init__(self, *, batch_size: int, min_replay_steps: int, samples_per_insert: float,
                 groups: bool, group_size: int = 1):
        self.groups, self.group_size = groups, max(int(group_size), 1)
        self.draws = max(batch_size // self.group_size, 1) if groups else batch_size
        self.batch_steps = self.draws * self.group_size if groups else batch_size
        self.min_replay_steps, self.samples_per_insert = min_replay_steps, samples_per_insert

    def ready(self, shard_stats: list[dict], sampled_steps: int) -> str:
        """"go", "fill" (the replay is too small) or "rate" (the learner is ahead of the actors)."""
        size = sum(st["size_steps"] for st in shard_stats)
        complete = sum(st.get("groups_complete") or 0 for st in shard_stats)
        if size < self.min_replay_steps or (self.groups and not complete):
            return "fill"
        stored = sum(st["stored_steps"] for st in shard_stats)
        if sampled_steps + self.batch_steps > self.samples_per_insert * stored:
            return "rate"
        return "go"
