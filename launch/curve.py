"""The learning curve a run leaves in its directory (`curve.png`): success of the episodes over
time (a moving mean over `window` episodes, in finishing order) and the learner's loss by step.

Not guaranteed: episodes are ordered by when the launcher collected them (every progress tick),
not by when each finished; with several actors, episodes of one tick are in actor order.
"""

from __future__ import annotations

import numpy as np


def moving_mean(values: list[bool] | list[float], window: int) -> np.ndarray:
    """Mean of the last `window` values at each position (fewer at the start)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return x
    csum = np.concatenate([[0.0], np.cumsum(x)])
    ends = np.arange(1, x.size + 1)
    starts = np.maximum(ends - window, 0)
    return (csum[ends] - csum[starts]) / (ends - starts)


def save_curve(path: str, outcomes: list[bool], losses: list[tuple[int, float]], window: int = 100) -> None:
    """Write the PNG: success (moving mean) by episode, and loss by learner step."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), constrained_layout=True)
    top.plot(np.arange(1, len(outcomes) + 1), moving_mean(outcomes, window), color="tab:blue")
    top.set(xlabel="episode", ylabel=f"success (last {window})", ylim=(-0.02, 1.02))
    top.grid(alpha=0.3)
    if losses:
        steps, values = zip(*losses)
        bottom.plot(steps, values, marker=".", color="tab:red")
    bottom.set(xlabel="learner step", ylabel="loss")
    bottom.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)
