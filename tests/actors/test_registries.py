"""The actors' registries and typed configs: engines by `engine.backend`, envs by `env.name`,
imported lazily; unknown names, tasks and constraints fail when an actor is built, before any
engine or browser starts (no vLLM, no Chromium here)."""

import subprocess
import sys

import pytest

from actors.config import RolloutConfig
from actors.engine import ENGINES, make_engine
from actors.engine.config import EngineConfig, VLLMCPUConfig, VLLMGPUConfig
from actors.env import ENVS, backend_class, check_task
from actors.env.config import EnvConfig, MiniWoBConfig
from actors.rollout_actor import RolloutActor
from rewards.config import RewardConfig


def test_importing_the_registries_and_configs_imports_no_engine_or_browser():
    code = ("import sys, actors.engine, actors.env, actors.config, actors.engine.base, actors.env.base; "
            "print(sorted(m for m in ('vllm', 'torch', 'playwright') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_engine_backend_names_it_and_the_known_ones():
    config = EngineConfig(backend="tpu", dtype="float32", max_model_len=64, enforce_eager=True)
    with pytest.raises(ValueError, match=r"unknown engine\.backend 'tpu'; known: cpu, gpu"):
        make_engine(config, "unused")
    assert sorted(ENGINES) == ["cpu", "gpu"]


def test_an_engine_refuses_the_other_backends_config():
    from actors.engine.vllm_cpu import VLLMEngine

    with pytest.raises(TypeError, match="VLLMEngine takes a VLLMCPUConfig, got VLLMGPUConfig"):
        VLLMEngine(VLLMGPUConfig(), "unused")


def test_configs_keep_each_backends_defaults():
    cpu, gpu = VLLMCPUConfig(), VLLMGPUConfig()
    assert (cpu.backend, cpu.dtype, cpu.max_model_len, cpu.enforce_eager, cpu.kv_cache_bytes) == \
        ("cpu", "float32", 1024, True, 64 << 20)
    assert (gpu.backend, gpu.dtype, gpu.max_model_len, gpu.enforce_eager) == ("gpu", "bfloat16", 4096, False)
    assert cpu.enable_lora is gpu.enable_lora is False and cpu.max_lora_rank == gpu.max_lora_rank == 16
    with pytest.raises(TypeError):
        VLLMGPUConfig(max_model_lenn=2048)  # no key is swallowed


def test_env_registry_by_name():
    from actors.env.miniwob import MiniWoBBackend

    assert backend_class("miniwob") is MiniWoBBackend and list(ENVS) == ["miniwob"]
    with pytest.raises(ValueError, match=r"unknown env\.name 'omniboxez'; known: miniwob"):
        backend_class("omniboxez")
    check_task(MiniWoBConfig(), "click-dialog")
    with pytest.raises(ValueError, match="unknown MiniWoB task 'click-buton'"):
        check_task(MiniWoBConfig(), "click-buton")


@pytest.mark.parametrize("env, rollout, error", [
    (MiniWoBConfig(tasks={"click-button": 1.0, "click-buton": 1.0}), RolloutConfig(), "unknown MiniWoB task"),
    (EnvConfig(name="omniboxez"), RolloutConfig(), r"unknown env\.name"),
    (MiniWoBConfig(), RolloutConfig(constraint="json"), "rollout.constraint must be one of"),
])
def test_a_bad_env_task_or_constraint_fails_before_the_engine_starts(env, rollout, error):
    with pytest.raises(ValueError, match=error):
        RolloutActor("actor-t", "no-model-here", [], engine=VLLMCPUConfig(), env=env, rollout=rollout,
                     reward=RewardConfig())


def own_members(cls, names) -> list[str]:
    """The members of `names` that `cls` defines itself (not borrowed from another class)."""
    own = []
    for name in names:
        member = vars(cls).get(name)
        fn = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
        if fn is not None and fn.__qualname__.startswith(f"{cls.__name__}."):
            own.append(name)
    return own


def test_each_engine_has_the_protocol_surface_of_its_own():
    from actors.engine import vllm_cpu, vllm_gpu

    surface = ["unfinished", "chat_prompt_ids", "submit", "step", "generate", "load_weights",
               "load_adapter", "close"]
    for engine in (vllm_cpu.VLLMEngine, vllm_gpu.AsyncVLLMEngine):
        assert own_members(engine, surface) == surface, engine
    # Neither engine module imports the other.
    assert not [v for v in vars(vllm_gpu).values() if getattr(v, "__module__", None) == vllm_cpu.__name__]
    assert not [v for v in vars(vllm_cpu).values() if getattr(v, "__module__", None) == vllm_gpu.__name__]


def test_miniwob_implements_env_and_backend_and_the_slot_knows_neither():
    from actors.env import miniwob, slot

    assert own_members(miniwob.AsyncMiniWoBEnv, ["open", "reset", "step", "close"]) == ["open", "reset", "step", "close"]
    backend = ["check_task", "closed", "new_env", "submit", "host_of", "replace_host", "stats", "close"]
    assert own_members(miniwob.MiniWoBBackend, backend) == backend
    assert not [v for v in vars(slot).values() if getattr(v, "__module__", "").startswith("actors.env.miniwob")]
