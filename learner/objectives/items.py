"""Whole episodes drawn from the replay (as GRPO groups; PPO draws groups of one) → one item per
turn, the shape PPO's GAE and GRPO's group advantages read.

The reward of a turn is the episode's return (from rewards/, set by the actor) on its last turn
and 0 before: outcome rewards, +1 / −0.5 / 0 or success 1 / 0, are terminal. The page's own
per-step rewards stay on the wire's steps, unused here.

Each item keeps the replay `key` of its step (for priority updates) and the group's importance
`weight`. NOT guaranteed: episodes cut short by FIFO eviction between two draws are not
detected here (the shard draws whole stored trajectories, so a drawn episode is complete).
"""

from __future__ import annotations

from typing import Any


def episode_items(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group items from SampleClient.sample_groups → per-turn dicts (traj_id, group_id,
    step_index, prompt_ids, response_ids, logprobs, allowed_actions, constraint, grammar, reward,
    return, policy_version, key, weight)."""
    items = []
    for g in groups:
        for traj, keys in zip(g["trajectories"], g["keys"]):
            last = len(traj.steps) - 1
            for i, step in enumerate(traj.steps):
                items.append({
                    "traj_id": traj.traj_id, "group_id": g["group_id"] or traj.group_id,
                    "step_index": i, "prompt_ids": step.prompt_ids, "response_ids": step.response_ids,
                    "logprobs": step.logprobs, "allowed_actions": step.allowed_actions,
                    "constraint": step.constraint, "grammar": traj.grammar,
                    "reward": traj.reward if i == last else 0.0, "return": traj.reward,
                    "policy_version": step.policy_version, "key": int(keys[i]),
                    "weight": float(g["weight"]), "shard": g.get("shard", 0),
                })
    return items
