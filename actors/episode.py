"""One env slot's episode in progress, how the policy's prompt is built from it, and how it becomes
a wire Trajectory when it ends."""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from buffer.schema import Step, Trajectory

_STEP_FIELDS = {f.name for f in dataclasses.fields(Step)}


@dataclass(frozen=True)
class Round:
    observation: str  # what the policy read (without the history)
    action: str
    error: str | None = None  # the env's complaint about the action, if any


@dataclass
class Episode:
    task: str
    seed: int
    policy_version: int  # when the episode started; each step carries its own
    started_at: float = field(default_factory=time.monotonic)
    steps: list[Step] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)

    @property
    def actions(self) -> list[str]:
        return [r.action for r in self.rounds]

    def add(self, *, observation: str, prompt_ids, response_ids, logprobs, action: str,
            allowed_actions: list[str], reward: float, done: bool, policy_version: int,
            screenshot_hash: str | None = None, error: str | None = None) -> None:
        extra = {"screenshot_hash": screenshot_hash} if "screenshot_hash" in _STEP_FIELDS else {}
        self.steps.append(Step(
            observation=observation,
            prompt_ids=np.asarray(prompt_ids, dtype=np.int32),
            response_ids=np.asarray(response_ids, dtype=np.int32),
            logprobs=np.asarray(logprobs, dtype=np.float32),
            action=action, allowed_actions=list(allowed_actions), reward=float(reward),
            done=bool(done), policy_version=int(policy_version), **extra))
        self.rounds.append(Round(observation, action, error))

    def finish(self, *, actor_id: str, env: str, reward: float, success: bool, outcome: str) -> Trajectory:
        return Trajectory(
            traj_id=uuid.uuid4().hex, task_id=self.task, group_id=f"{self.task}:{self.seed}",
            actor_id=actor_id, env=env, seed=self.seed, policy_version=self.policy_version,
            steps=self.steps, reward=float(reward), success=bool(success), outcome=outcome,
            created_at=time.time())


def render_prompt(observation_text: str, rounds: list[Round], history: int, window: int = 0) -> str:
    """What the policy reads, WebGym-style: the current observation; then the rounds before the
    last `window` summarized as one line each (their action, and the env's error if any), at
    most the latest `history` of them (-1: all); then the last `window` rounds whole
    (observation and action).

    With window=0 this is the observation plus the last `history` actions. NOT guaranteed: the
    prompt fits the model's context; long windows of long observations can exceed it.
    """
    whole = rounds[len(rounds) - window:] if window > 0 else []
    older = rounds[:len(rounds) - len(whole)]
    if history >= 0:
        older = older[max(len(older) - history, 0):]
    parts = [observation_text]
    if older:
        lines = [r.action if not r.error else f"{r.action} -> error: {r.error}" for r in older]
        parts.append("Previous actions:\n" + "\n".join(lines))
    if whole:
        first = len(rounds) - len(whole) + 1
        parts.append("Last rounds:\n" + "\n".join(
            f"Round {first + i}:\n{r.observation}\nAction: {r.action}" for i, r in enumerate(whole)))
    return "\n".join(parts)
