"""One env slot's episode in progress, and how it becomes a wire Trajectory when it ends."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from buffer.schema import Step, Trajectory


@dataclass
class Episode:
    task: str
    seed: int
    policy_version: int
    steps: list[Step] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)

    def add(self, *, observation: str, prompt_ids, response_ids, logprobs, action: str,
            allowed_actions: list[str], reward: float, done: bool, policy_version: int) -> None:
        self.steps.append(Step(
            observation=observation,
            prompt_ids=np.asarray(prompt_ids, dtype=np.int32),
            response_ids=np.asarray(response_ids, dtype=np.int32),
            logprobs=np.asarray(logprobs, dtype=np.float32),
            action=action, allowed_actions=list(allowed_actions), reward=float(reward),
            done=bool(done), policy_version=int(policy_version)))
        self.actions.append(action)

    def finish(self, *, actor_id: str, env: str, reward: float, success: bool, outcome: str) -> Trajectory:
        return Trajectory(
            traj_id=uuid.uuid4().hex, task_id=self.task, group_id=f"{self.task}:{self.seed}",
            actor_id=actor_id, env=env, seed=self.seed, policy_version=self.policy_version,
            steps=self.steps, reward=float(reward), success=bool(success), outcome=outcome,
            created_at=time.time())


def render_prompt(observation_text: str, previous_actions: list[str], history: int) -> str:
    """What the policy reads: the observation, plus its last `history` actions in this episode."""
    if history <= 0 or not previous_actions:
        return observation_text
    past = "\n".join(previous_actions[-history:])
    return f"{observation_text}\nPrevious actions:\n{past}"
