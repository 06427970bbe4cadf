"""The whole loop for tests: a composed config on tiny sizes, a started system, and waiting."""

import time
from collections.abc import Iterator

import ray

from launch.cluster import System, build, start_ray
from launch.config import Config, compose_config, to_config

BASE = ["cluster.dashboard=false", "logger.wandb.enabled=false", "learner.min_replay_steps=4",
        "learner.samples_per_insert=1000"]


def loop_cfg(run_dir, overrides: list[str]) -> Config:
    """The typed config of `overrides` on tiny sizes. run_dir must be short: Ray's socket paths
    under it must fit 107 bytes."""
    return to_config(compose_config([f"run.dir={run_dir}", *BASE, *overrides]))


def running_system(cfg: Config) -> Iterator[System]:
    """Ray started and every component built (nothing runs yet); Ray is shut down after."""
    start_ray(cfg, cfg.run.dir)
    try:
        yield build(cfg, cfg.run.dir)
    finally:
        ray.shutdown()


def wait_for(predicate, timeout_s: float, what: str, *, check=None, poll_s: float = 1.0):
    """predicate()'s first truthy value within timeout_s; `check()` (if given) runs between polls
    and may raise, e.g. when a component died while we waited."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if check is not None:
            check()
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
