"""The sample maps a shard hands out: one per drawn step, or one per drawn GRPO group.

A step item carries the contract's keys (traj_id, step_index, prompt_ids, response_ids, logprobs
as little-endian bytes, action, reward, return, success, policy_version, loss_weight); the server
adds key, probability and priority from the arrays that travel beside the items (SampleItems).
A group item carries the wire frames of the group's trajectories and one key per step.

Not guaranteed: items copy the arrays' bytes (they are sent at once); nothing here is cached.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from buffer.core.storage import Record
from buffer.wire.schema import Trajectory, encode


class SampleItems(list):
    """The sample maps, plus per-item arrays: `keys` (for priority updates), `probabilities`,
    `weights` (importance weights, also each item's loss_weight) and `priorities`.
    `status` is "ok", "empty" (nothing drawable) or "retry" (the rate limiter said wait)."""

    status = "ok"
    keys = probabilities = weights = priorities = np.zeros(0)


def step_item(traj: Trajectory, step_index: int, loss_weight: float) -> dict[str, Any]:
    step = traj.steps[step_index]
    return {
        "traj_id": traj.traj_id,
        "step_index": step_index,
        "prompt_ids": step.prompt_ids.tobytes(),
        "response_ids": step.response_ids.tobytes(),
        "logprobs": step.logprobs.tobytes(),
        "action": step.action,
        "reward": step.reward,
        "return": traj.reward,
        "success": traj.success,
        "policy_version": step.policy_version,
        "loss_weight": loss_weight,
    }


def group_item(group_id: str | None, members: list[Record], keys: list[np.ndarray], probability: float, weight: float) -> dict[str, Any]:
    return {
        "group_id": group_id,
        "frames": [encode(r.traj) for r in members],
        "keys": [np.asarray(k, dtype="<i8").tobytes() for k in keys],
        "probability": probability,
        "weight": weight,
    }
