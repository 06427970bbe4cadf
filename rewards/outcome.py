"""Episode rewards from the outcome of a finished episode. Pure functions, no I/O.

outcome is "correct" (the task's own check passed), "incorrect" (it failed, or the episode ran
out of steps) or "unknown" (the episode could not be judged: browser crash, page timeout).
"""


def success_reward(*, success: bool, outcome: str, env_reward: float) -> float:
    """WebGym's SFT-on-success signal: 1 for a solved task, else 0."""
    return 1.0 if success else 0.0


def outcome_reward(*, success: bool, outcome: str, env_reward: float,
                   correct: float = 1.0, incorrect: float = -0.5, unknown: float = 0.0) -> float:
    """A three-way reward for policy-gradient algorithms: an unjudged episode teaches nothing."""
    return {"correct": correct, "incorrect": incorrect, "unknown": unknown}[outcome]


def env_reward(*, success: bool, outcome: str, env_reward: float) -> float:
    """The environment's own reward (MiniWoB++: time-discounted, in [-1, 1])."""
    return float(env_reward)
