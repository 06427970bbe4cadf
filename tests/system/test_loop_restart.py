"""A rollout actor's process killed mid-run: Ray restarts it, the learner's next weight sync fails,
opens a new weight group with every actor, sends the current weights again and starts the
actors; the loop goes on, and the restarted actor serves the learner's policy version."""

import os
import signal

import pytest
import ray

from launch.cluster import start, stop
from tests.support.chromium_processes import flywheel_browsers
from tests.support.loop_system import loop_cfg, running_system, wait_for

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    cfg = loop_cfg(tmp_path_factory.mktemp("restart"), [
        "+exp=webgym", "rollout.slots=2", "learner.batch_size=8", "learner.sync_every=3"])
    yield from running_system(cfg)


def pid_of(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=300)


def test_a_killed_rollout_actor_comes_back_with_the_current_weights(system):
    actor, learner = system.actors[0], system.learner
    start(system)
    wait_for(lambda: ray.get(actor.stats.remote()).get("weight_updates", 0) >= 1, 300, "a first weight update")
    before = ray.get(actor.stats.remote())
    pid = pid_of(actor)
    os.kill(pid, signal.SIGKILL)

    def learner_alive():
        if (err := ray.get(learner.stats.remote())["error"]) is not None:
            raise AssertionError(f"the learner died: {err}")

    # Calls wait while Ray restarts the actor; then the learner's next sync takes it in.
    wait_for(lambda: ray.get(learner.stats.remote()).get("weight_plane_rebuilds", 0) >= 1, 400,
             "the learner opening a new weight group", check=learner_alive)
    wait_for(lambda: ray.get(actor.stats.remote()).get("episodes", 0) >= 2, 300,
             "episodes from the restarted actor", check=learner_alive)
    after = ray.get(actor.stats.remote())
    assert pid_of(actor) != pid
    assert after["instance"] != before["instance"] and after["restarted"] and not before["restarted"]
    assert after["weight_updates"] >= 1 and after["error"] is None
    version = ray.get(learner.stats.remote())["policy_version"]
    assert 1 <= after["policy_version"] <= version
    assert after["policy_version"] > before["policy_version"]  # what the learner sent it, not the base
    stop(system)
    assert ray.get(learner.stats.remote())["error"] is None
    assert not flywheel_browsers(), "a browser (the killed actor's?) outlived the run"
