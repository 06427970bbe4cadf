"""Builders of valid random trajectories for tests (any room may use them), and the chi-square
check the sampling tests share.

from tests.support.trajectories import make_trajectory, wire_map
"""

from __future__ import annotations

import uuid

import msgpack
import numpy as np

from buffer.wire.schema import Step, Trajectory, encode


def make_step(rng: np.random.Generator, *, policy_version: int = 0, done: bool = False, vocab: int = 32_000) -> Step:
    n_prompt = int(rng.integers(1, 40))
    n_resp = int(rng.integers(1, 12))
    actions = [f"click({j})" for j in range(int(rng.integers(0, 4)))]
    return Step(
        observation=f"page {int(rng.integers(1_000_000))}",
        prompt_ids=rng.integers(0, vocab, size=n_prompt).astype(np.int32),
        response_ids=rng.integers(0, vocab, size=n_resp).astype(np.int32),
        logprobs=-rng.exponential(1.0, size=n_resp).astype(np.float32),
        action=actions[0] if actions else "noop()",
        allowed_actions=actions,
        reward=float(rng.normal()),
        done=done,
        policy_version=policy_version,
    )


def make_trajectory(
    rng: np.random.Generator,
    *,
    traj_id: str | None = None,
    n_steps: int | None = None,
    success: bool | None = None,
    policy_version: int = 0,
    group_id: str = "g0",
    vocab: int = 32_000,
) -> Trajectory:
    """A valid random trajectory (token ids below `vocab`); unspecified fields are drawn from `rng`."""
    n_steps = int(rng.integers(1, 5)) if n_steps is None else n_steps
    success = bool(rng.integers(2)) if success is None else success
    return Trajectory(
        traj_id=traj_id or uuid.UUID(bytes=rng.bytes(16)).hex,
        task_id="click-button",
        group_id=group_id,
        actor_id="actor-0",
        env="miniwob",
        seed=int(rng.integers(1 << 31)),
        policy_version=policy_version,
        steps=[make_step(rng, policy_version=policy_version, done=i == n_steps - 1, vocab=vocab)
               for i in range(n_steps)],
        reward=1.0 if success else 0.0,
        success=success,
        outcome="correct" if success else "incorrect",
        created_at=1_700_000_000.0 + float(rng.integers(1_000_000)),
    )


def chi_square(observed: np.ndarray, expected_p: np.ndarray) -> tuple[float, float]:
    """(Pearson statistic, critical value at significance 0.001) for observed counts against
    expected probabilities. Without scipy: the critical value is Wilson–Hilferty's approximation
    of the chi-square quantile (within ~1 % for df >= 3 at this level)."""
    observed = np.asarray(observed, dtype=np.float64)
    expected = np.asarray(expected_p, dtype=np.float64) * observed.sum()
    assert (expected > 0).all(), "every category needs a positive expectation"
    stat = float(((observed - expected) ** 2 / expected).sum())
    df = len(observed) - 1
    z = 3.090232  # standard normal quantile at 0.999
    crit = df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3
    return stat, float(crit)


def wire_map(traj: Trajectory) -> dict:
    """The msgpack map of `traj`, to mutate into invalid frames."""
    return msgpack.unpackb(encode(traj), raw=False)


def pack(m: object) -> bytes:
    return msgpack.packb(m, use_bin_type=True)


def assert_same_trajectory(a: Trajectory, b: Trajectory) -> None:
    for name in (
        "traj_id", "task_id", "group_id", "actor_id", "env", "seed",
        "policy_version", "reward", "success", "outcome", "created_at", "grammar",
    ):  # fmt: skip
        assert getattr(a, name) == getattr(b, name), name
    assert len(a.steps) == len(b.steps)
    for sa, sb in zip(a.steps, b.steps, strict=True):
        for name in (
            "observation",
            "action",
            "allowed_actions",
            "reward",
            "done",
            "policy_version",
        ):
            assert getattr(sa, name) == getattr(sb, name), name
        for name, dtype in (
            ("prompt_ids", np.int32),
            ("response_ids", np.int32),
            ("logprobs", np.float32),
        ):
            arr = getattr(sb, name)
            assert arr.dtype == dtype, name
            np.testing.assert_array_equal(getattr(sa, name), arr)
