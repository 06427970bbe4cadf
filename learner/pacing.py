"""How much the learner draws per step (steps, or whole groups), and when it must wait.

The learner waits until the replay holds `min_replay_steps` steps (or, drawing groups, one
complete group), and keeps the steps all ranks have drawn within `samples_per_insert` × the steps
the shards have stored, so a fast learner cannot over-fit the first few episodes while the actors
are still collecting. (How a draw is split over the shards: buffer/net/sharded_clients.py.)

After a resume the ratio starts afresh where the replay no longer backs the learner's draws (an
empty replay, or one restored onto another number of shards counts only what it restored):
`rebase` forgives the draws beyond `samples_per_insert` × what the shards hold then, instead of
making the learner wait for the actors to insert the old run's data again.

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
        self.forgiven = 0  # draws before a resume that the replay of the resumed run does not back

    def rebase(self, shard_stats: list[dict], sampled_steps: int) -> None:
        stored = sum(st["stored_steps"] for st in shard_stats)
        self.forgiven = max(0, int(sampled_steps - self.samples_per_insert * stored))

    def ready(self, shard_stats: list[dict], sampled_steps: int) -> str:
        """"go", "fill" (the replay is too small) or "rate" (the learner is ahead of the actors)."""
        size = sum(st["size_steps"] for st in shard_stats)
        complete = sum(st.get("groups_complete") or 0 for st in shard_stats)
        if size < self.min_replay_steps or (self.groups and not complete):
            return "fill"
        stored = sum(st["stored_steps"] for st in shard_stats)
        if sampled_steps - self.forgiven + self.batch_steps > self.samples_per_insert * stored:
            return "rate"
        return "go"
