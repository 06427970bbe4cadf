"""Every learner rank is watched: a rank > 0 whose process is killed mid-run ends the run within a
minute, named with its node's address, instead of leaving rank 0 waiting in a collective until
`run.max_minutes`."""

import os
import signal
import time

import pytest
import ray

from launch.cluster import start
from launch.config import WandbConfig
from launch.progress import ComponentDied, Progress
from tests.support.loop_system import loop_cfg, running_system, wait_for

pytestmark = pytest.mark.timeout(600)


def test_a_killed_learner_rank_ends_the_run_with_its_name_and_node(tmp_path):
    cfg = loop_cfg(tmp_path, ["learner.world_size=2", "learner.batch_size=4", "rollout.slots=2"])
    run = running_system(cfg)
    system = next(run)
    try:
        progress = Progress(system.actors, system.learners, system.shards, wandb=WandbConfig(enabled=False),
                            run_dir=str(tmp_path), config={})
        start(system)
        wait_for(lambda: progress.poll()["learner_step"] >= 2, 300, "two learner steps on two ranks")
        rank1 = system.learners[1]
        node = ray.get(rank1.__ray_call__.remote(lambda self: ray.util.get_node_ip_address()))
        os.kill(ray.get(rank1.__ray_call__.remote(lambda self: os.getpid())), signal.SIGKILL)
        killed = time.time()
        with pytest.raises(ComponentDied) as died:
            while time.time() - killed < 60:
                progress.poll()
                time.sleep(2)
        assert str(died.value).startswith("learner-1 died:") and node in str(died.value)
    finally:
        run.close()  # Ray shut down: rank 0, still in its collective, goes with it
