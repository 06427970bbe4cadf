"""The two learning-rate schedules, on a real DeepSpeed engine (CPU, gloo, one rank): the lr at
each step against the formula."""

import itertools
import math
from pathlib import Path

import pytest
import torch

from learner import deepspeed_setup

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ranked():
    deepspeed_setup.init_rank(0, 1, "127.0.0.1", deepspeed_setup.free_port(), "gloo")


def lrs(schedule: str, steps: int, **kw) -> list[float]:
    cfg = deepspeed_setup.load_config(str(ROOT / "configs/deepspeed/cpu.json"), micro_batch=2, grad_accum=1,
                                      lr=1e-2, zero_stage=1, grad_clip=1.0, warmup_steps=4,
                                      schedule=schedule, **kw)
    engine, scheduler = deepspeed_setup.initialize(torch.nn.Linear(3, 1), cfg)
    out = []
    for _ in range(steps):
        loss = engine(torch.ones(2, 3)).sum()
        engine.backward(loss)
        engine.step()
        out.append(scheduler.get_last_lr()[0])
    return out


def test_constant_with_warmup(ranked):
    got = lrs("constant_with_warmup", 8)
    assert got[-1] == pytest.approx(1e-2) and got[-2] == pytest.approx(1e-2)
    assert all(a < b for a, b in itertools.pairwise(got[:4])), f"no warm-up: {got}"


def test_cosine_decays_to_min_ratio(ranked):
    got = lrs("cosine", 20, total_steps=20, min_lr_ratio=0.1)
    assert max(got) == pytest.approx(1e-2, rel=1e-3)
    # Every step after the 4 of warm-up on the cosine (a straight line meets it only halfway).
    for i in range(4, 20):
        want = 1e-2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (i + 1 - 4) / (20 - 4))))
        assert got[i] == pytest.approx(want, rel=1e-4), i
    assert got[-1] == pytest.approx(1e-3, rel=0.1)


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="learner.schedule"):
        deepspeed_setup.load_config(str(ROOT / "configs/deepspeed/cpu.json"), micro_batch=2, grad_accum=1,
                                    lr=1e-2, zero_stage=1, grad_clip=1.0, warmup_steps=4, schedule="linear")
