"""One env slot's episode in progress, how the policy's prompt is built from it, and how it becomes
a wire Trajectory when it ends."""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from buffer.wire.schema import Step, Trajectory

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
    grammar: str | None = None  # the EBNF its steps decode under (rollout.constraint=grammar)
    started_at: float = field(default_factory=time.monotonic)
    steps: list[Step] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)

    @property
    def actions(self) -> list[str]:
        return [r.action for r in self.rounds]

    def add(self, *, observation: str, prompt_ids, response_ids, logprobs, action: str,
            allowed_actions: list[str], reward: float, done: bool, policy_version: int,
            screenshot_hash: str | None = None, error: str | None = None,
            constraint: str | None = None) -> None:
        optional = {"screenshot_hash": screenshot_hash, "constraint": constraint}
        extra = {k: v for k, v in optional.items() if k in _STEP_FIELDS}
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
            created_at=time.time(), grammar=self.grammar)


def render_prompt(observation_text: str, rounds: list[Round], history: int, window: int = 0,
                  drop: int = 0) -> str:
    """What the policy reads, WebGym-style: the current observation; then the rounds before the
    last `window` summarized as one line each (their action, and the env's error if any), at
    most the latest `history` of them (-1: all); then the last `window` rounds whole
    (observation and action). `drop` leaves out the oldest `drop` of the rounds that would be
    shown (summarized ones first), to make a prompt fit (see fit_prompt).

    With window=0 this is the observation plus the last `history` actions. NOT guaranteed: the
    prompt fits the model's context (fit_prompt sees to that).
    """
    whole = rounds[len(rounds) - window:] if window > 0 else []
    older = rounds[:len(rounds) - len(whole)]
    if history >= 0:
        older = older[max(len(older) - history, 0):]
    cut = min(drop, len(older))
    older, whole = older[cut:], whole[drop - cut:]
    parts = [observation_text]
    if older:
        lines = [r.action if not r.error else f"{r.action} -> error: {r.error}" for r in older]
        parts.append("Previous actions:\n" + "\n".join(lines))
    if whole:
        first = len(rounds) - len(whole) + 1
        parts.append("Last rounds:\n" + "\n".join(
            f"Round {first + i}:\n{r.observation}\nAction: {r.action}" for i, r in enumerate(whole)))
    return "\n".join(parts)


@dataclass
class FittedPrompt:
    ids: list[int]
    rounds_dropped: int = 0  # history rounds left out to fit
    truncated: bool = False  # even the bare observation was too long: its tail was cut


def fit_prompt(tokenize, observation_text: str, rounds: list[Round], history: int, window: int,
               limit: int) -> FittedPrompt:
    """The prompt's token ids (`tokenize(text)`), at most `limit` long: the oldest history
    rounds go first; if the observation alone is still too long, its tail is cut (the task
    sentence comes first in an observation, so it survives)."""
    ids = tokenize(render_prompt(observation_text, rounds, history, window))
    shown = min(len(rounds), max(window, 0) + (len(rounds) if history < 0 else history))
    drop = 0
    while len(ids) > limit and drop < shown:
        drop += 1
        ids = tokenize(render_prompt(observation_text, rounds, history, window, drop))
    if len(ids) <= limit:
        return FittedPrompt(ids, drop)
    text = observation_text
    while len(ids) > limit and text:
        text = text[:max(0, len(text) * limit // len(ids) - 1)]
        ids = tokenize(text)
    if len(ids) > limit:
        raise ValueError(f"the chat template alone takes {len(ids)} tokens, more than {limit}")
    return FittedPrompt(ids, drop, truncated=True)
