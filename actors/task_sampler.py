"""Which task an episode plays (of the env's tasks, e.g. MiniWoB++ pages), and with how many steps,
from config (EnvConfig's task, tasks, max_steps, max_steps_by_task).

`tasks` is None (always `default_task`), a list of names (uniform) or a map name -> weight. The
choice is a pure function of the episode seed, so (seed, config) replays an episode: the seed is
recorded on the trajectory, the task as its task_id.

NOT guaranteed: the same choice for the same seed under a different `tasks` config (adding a
task reshuffles which seeds pick which task).
"""

from __future__ import annotations

import random


class TaskSampler:
    def __init__(self, default_task: str, tasks=None, max_steps: int = 10,
                 max_steps_by_task: dict | None = None):
        if tasks is None or len(tasks) == 0:
            tasks = [default_task]
        if isinstance(tasks, dict):
            self.names, self.weights = list(tasks), [float(w) for w in tasks.values()]
        else:
            self.names, self.weights = list(tasks), [1.0] * len(tasks)
        if any(w < 0 for w in self.weights) or not sum(self.weights) > 0:
            raise ValueError(f"task weights must be >= 0 with a positive sum, got {tasks}")
        self.max_steps = int(max_steps)
        self.max_steps_by_task = {k: int(v) for k, v in (max_steps_by_task or {}).items()}

    def task(self, seed: int) -> str:
        if len(self.names) == 1:
            return self.names[0]
        return random.Random(seed).choices(self.names, weights=self.weights)[0]

    def steps_for(self, task: str) -> int:
        return self.max_steps_by_task.get(task, self.max_steps)
