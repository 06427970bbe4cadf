"""TrainItem: one step to train on, as every objective reads it, built from what the replay hands out.

- `step_items`: single steps drawn from the shards (SFT). `weight` is the replay's importance
  weight of the step (the wire's `loss_weight`).
- `episode_items`: whole episodes drawn as groups (GRPO; PPO draws groups of one), one item per
  turn, the shape PPO's GAE and GRPO's group advantages read. `weight` is the group's importance
  weight. The reward of a turn is the episode's return (from rewards/, set by the actor) on its
  last turn and 0 before: outcome rewards, +1 / −0.5 / 0 or success 1 / 0, are terminal. The
  page's own per-step rewards stay on the wire's steps, unused here.

Each item keeps the replay `key` of its step and the `shard` it came from (priority updates).
NOT guaranteed: episodes cut short by FIFO eviction between two draws are not detected here (the
shard draws whole stored trajectories, so a drawn episode is complete); step items carry no
allowed actions or grammar (SFT trains on the action text, not the masked distribution).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _ints() -> np.ndarray:
    return np.zeros(0, np.int32)


@dataclass
class TrainItem:
    traj_id: str = ""
    step_index: int = 0
    prompt_ids: np.ndarray = field(default_factory=_ints)  # int32 token ids
    response_ids: np.ndarray = field(default_factory=_ints)  # int32, as the engine sampled them
    logprobs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # behaviour logprobs
    action: str = ""
    weight: float = 1.0  # importance weight from the replay: every loss multiplies by it
    reward: float = 0.0  # this turn's reward (the episode's return on its last turn)
    ret: float = 0.0  # the episode's return
    group_id: str | None = None
    allowed_actions: list[str] = field(default_factory=list)  # the choice constraint, if any
    constraint: str = "none"  # choice | grammar | none
    grammar: str | None = None  # the EBNF the step was decoded under (constraint grammar)
    policy_version: int = 0
    key: int = 0  # the step's replay key
    shard: int = 0


def step_items(items: list[dict[str, Any]]) -> list[TrainItem]:
    """Step maps from ShardedSampleClient.sample (decoded) → TrainItems."""
    return [TrainItem(traj_id=it["traj_id"], step_index=int(it["step_index"]), prompt_ids=it["prompt_ids"],
                      response_ids=it["response_ids"], logprobs=it["logprobs"], action=it["action"],
                      weight=float(it["loss_weight"]), reward=float(it["reward"]), ret=float(it["return"]),
                      policy_version=int(it["policy_version"]), key=int(it.get("key", 0)),
                      shard=int(it.get("shard", 0)))
            for it in items]


def episode_items(groups: list[dict[str, Any]]) -> list[TrainItem]:
    """Group maps from ShardedSampleClient.sample_groups → one TrainItem per turn."""
    items = []
    for g in groups:
        for traj, keys in zip(g["trajectories"], g["keys"]):
            last = len(traj.steps) - 1
            for i, step in enumerate(traj.steps):
                items.append(TrainItem(
                    traj_id=traj.traj_id, group_id=g["group_id"] or traj.group_id, step_index=i,
                    prompt_ids=step.prompt_ids, response_ids=step.response_ids, logprobs=step.logprobs,
                    action=step.action, allowed_actions=list(step.allowed_actions), constraint=step.constraint,
                    grammar=traj.grammar, reward=traj.reward if i == last else 0.0, ret=traj.reward,
                    policy_version=step.policy_version, key=int(keys[i]), weight=float(g["weight"]),
                    shard=g.get("shard", 0)))
    return items
