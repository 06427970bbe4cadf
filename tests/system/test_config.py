"""The typed config: every group composes into its dataclass, and a misspelled key (also one
added with `+`, which Hydra alone accepts silently) fails before anything starts, naming the full
key and the nearest valid one."""

import subprocess
import sys
from pathlib import Path

import pytest

from actors.config import RolloutConfig
from actors.engine.config import VLLMCPUConfig, VLLMGPUConfig
from launch.config import Config, ConfigError, compose_config, to_config
from learner.config import GRPOConfig, LearnerConfig, PPOConfig, SFTConfig

ROOT = Path(__file__).resolve().parents[2]


def typed(*overrides: str) -> Config:
    return to_config(compose_config(list(overrides)))


def launch(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "launch/cluster.py", "+exp=webgym", *overrides], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_key_added_with_plus_is_refused_before_ray_starts():
    proc = launch("+engine.max_model_lenn=2048")
    assert proc.returncode == 2
    assert "unknown config key engine.max_model_lenn; did you mean engine.max_model_len?" in proc.stderr
    assert "run_dir" not in proc.stdout and "ray" not in proc.stderr.lower()  # nothing started


def test_a_misspelled_override_is_refused_with_the_nearest_key():
    proc = launch("rollout.slotz=8")
    assert proc.returncode == 2
    assert "unknown config key rollout.slotz; did you mean rollout.slots?" in proc.stderr


@pytest.mark.parametrize("overrides, message", [
    (["engine=vllm_gpu", "engine.kv_cache_bytes=1"], "unknown config key engine.kv_cache_bytes; valid keys of engine"),
    (["+learner.lora.rank=8"], ("unknown config key learner.lora.rank; valid keys of learner.lora: alpha, dropout, "
                                "enabled, r, target_modules")),
    (["checkpoint.evrey=5"], "did you mean checkpoint.every?"),
    (["snapshot.every=5"], "unknown config key snapshot; it is now checkpoint"),
    (["rollout.metrics_every_s=2"], "unknown config key rollout.metrics_every_s; it is now logger.metrics.every_s"),
    (["rollout.slots=many"], "bad value for rollout.slots"),
    (["algorithm=grpo", "algorithm.length_norm=tokens"], "algorithm.length_norm must be one of"),
])
def test_what_the_schema_refuses_is_named(overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("?", r"\?")):
        typed(*overrides)


def test_each_group_composes_into_its_dataclass_with_its_own_defaults():
    cfg = typed()
    assert cfg.engine == VLLMCPUConfig() and cfg.learner == LearnerConfig() and cfg.rollout == RolloutConfig()
    assert cfg.algorithm == SFTConfig() and cfg.buffer.success_only  # the default loop is SFT-on-success
    gpu = typed("+exp=webgym_gpu")
    assert isinstance(gpu.engine, VLLMGPUConfig) and gpu.engine.max_model_len == 4096
    assert gpu.learner.backend == "nccl" and gpu.learner.lr == 1e-5
    assert typed("+exp=webgym_ppo").algorithm == PPOConfig()
    grpo = typed("+exp=webgym_grpo", "rollout.max_tokens=40")
    assert grpo.algorithm == GRPOConfig(max_response_len=40)  # dr_grpo's denominator follows max_tokens
    assert typed("buffer=prioritized").buffer.shards == 2


def test_overrides_reach_the_typed_objects():
    cfg = typed("+exp=webgym", "rollout.slots=8", "engine.max_model_len=2048", "learner.lora.enabled=true",
                "env.tasks=[click-button,click-link]", "reward.name=outcome", "+reward.params.incorrect=-0.5")
    assert cfg.rollout.slots == 8 and cfg.engine.max_model_len == 2048 and cfg.learner.lora.enabled
    assert cfg.env.tasks == ["click-button", "click-link"] and cfg.reward.params == {"incorrect": -0.5}
