"""The GPU DeepSpeed configs: WebGym's shape, concrete values, and DeepSpeed accepts them after
our loader's overrides."""

import json
from pathlib import Path

import pytest

from learner.deepspeed_setup import load_config

DS_DIR = Path(__file__).resolve().parents[2] / "configs" / "deepspeed"
GPU_FILES = [f"zero{s}_{gpu}.json" for gpu in ("b200", "h100") for s in (1, 2, 3)]


@pytest.mark.parametrize("name", GPU_FILES)
def test_gpu_config_parses_after_overrides(name):
    from deepspeed.runtime.config import DeepSpeedConfig

    raw = json.loads((DS_DIR / name).read_text())
    assert "auto" not in json.dumps(raw)
    zero = raw["zero_optimization"]
    assert raw["bf16"]["enabled"] and zero["overlap_comm"] and zero["contiguous_gradients"]
    assert "offload_optimizer" not in zero and "offload_param" not in zero
    stage = int(name[4])
    assert zero["stage"] == stage

    cfg = load_config(str(DS_DIR / name), micro_batch=4, grad_accum=2, lr=1e-5, zero_stage=stage,
                      grad_clip=0.5, warmup_steps=7)
    ds = DeepSpeedConfig(cfg)
    assert (ds.train_batch_size, ds.gradient_accumulation_steps) == (8, 2)
    assert ds.zero_optimization_stage == stage and ds.bfloat16_config.enabled and ds.gradient_clipping == 0.5
    assert ds.optimizer_params["lr"] == 1e-5 and ds.scheduler_params["warmup_num_steps"] == 7
