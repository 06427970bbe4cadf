"""Rewards: pure functions from a finished episode to a scalar, chosen by name in config."""

from functools import partial

from rewards.config import RewardConfig
from rewards.outcome import env_reward, outcome_reward, success_reward

REWARDS = {"success": success_reward, "outcome": outcome_reward, "env": env_reward}
OUTCOMES = ("correct", "incorrect", "unknown")


def make_reward(name: str, **params):
    """The reward function `name` with its parameters bound (e.g. outcome's incorrect=-0.5)."""
    if name not in REWARDS:
        raise ValueError(f"reward.name must be one of {sorted(REWARDS)}, got {name!r}")
    return partial(REWARDS[name], **params)


def reward_from_config(config: RewardConfig):
    """The reward function a RewardConfig names, its params bound."""
    return make_reward(config.name, **config.params)
