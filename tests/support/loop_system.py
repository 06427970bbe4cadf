"""The whole loop for tests: a composed config on tiny sizes, a started system, and waiting."""

import time
from collections.abc import Iterator

import ray
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from launch.cluster import ROOT, System, build, start_ray

BASE = ["cluster.dashboard=false", "logger.wandb.enabled=false", "learner.min_replay_steps=4",
        "learner.samples_per_insert=1000"]


def loop_cfg(run_dir, overrides: list[str]) -> DictConfig:
    """run_dir must be short: Ray's socket paths under it must fit 107 bytes."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=[f"run.dir={run_dir}", *BASE, *overrides])


def running_system(cfg: DictConfig) -> Iterator[System]:
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
