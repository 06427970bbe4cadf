"""The run's typed config: one dataclass per group, registered as Hydra structured configs.

Each room owns its config classes (actors/config.py, actors/engine/config.py, actors/env/config.py,
buffer/core/config.py, learner/config.py, weights/config.py, rewards/config.py); this module adds
the launcher's own (model, cluster, logger, run), assembles the root `Config` and registers every
group option in Hydra's ConfigStore, so each default lives in exactly one place (a dataclass) and
`configs/` holds only the defaults list, presets (learner/h100.yaml, buffer/prioritized.yaml) and
experiments (exp/*.yaml).

Hydra validates overrides against these classes; `check_overrides` composes the command line
first and turns any unknown key (also one added with `+`, which Hydra would silently accept)
into a ConfigError that names the full key and the nearest valid one, before anything starts.
`to_config` gives components their typed objects (dataclass `__post_init__` checks run there).

NOT guaranteed: values are checked per group here; combinations across groups are checked by
launch/checks.py.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from actors.config import RolloutConfig
from actors.engine.config import EngineConfig, VLLMCPUConfig, VLLMGPUConfig
from actors.env.config import EnvConfig, MiniWoBConfig
from buffer.core.config import BufferConfig
from learner.config import AlgorithmConfig, CheckpointConfig, GRPOConfig, LearnerConfig, PPOConfig, SFTConfig
from learner.tiny_model import TinyModelSpec
from rewards.config import RewardConfig
from weights.config import WeightsConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# Keys that were renamed: an override of the old one is answered with the new one.
RENAMED = {"snapshot": "checkpoint", "rollout.metrics_every_s": "logger.metrics.every_s"}


class ConfigError(ValueError):
    """A config key or value that the schema refuses; the message names the full key."""


@dataclass
class ModelConfig:
    path: str | None = None  # any HF model directory; null builds the embedded tiny model into cache_dir
    cache_dir: str = ".cache/models"
    tiny: TinyModelSpec = field(default_factory=TinyModelSpec)  # same spec, same files, byte for byte


@dataclass
class ClusterCpus:
    actor: float = 0.5
    learner: float = 0.5
    shard: float = 0.25


@dataclass
class ClusterResources:
    """A custom Ray resource each component asks for, to steer it to the nodes that offer it
    (`ray start --resources='{"rollout": 8}'`): "NAME" asks 0.01 of it (steers, never limits),
    "NAME:AMOUNT" that much (e.g. one per actor); null: anywhere."""

    actor: str | None = None
    learner: str | None = None
    shard: str | None = None


@dataclass
class ClusterConfig:
    address: str | None = None  # null: start a local Ray cluster; else join this one (e.g. "auto")
    host: str | None = None  # null: every server binds its own node's address (Ray's node IP); else this one
    dashboard: bool = True
    dashboard_host: str = "127.0.0.1"  # the address the dashboard listens on (a node's own IP to reach it remotely)
    dashboard_port: int = 8265  # taken (another run on this machine): a free port is used, and the run says which
    ship_code: str = "auto"  # auto: workers get this checkout through Ray's runtime_env (working_dir) when joining
    # a cluster (cluster.address), else PYTHONPATH to it; always | never
    log_to_driver: bool = False  # true: workers' output (vLLM warnings, browser failures) streams to the console;
    # either way it is kept under the run's Ray session (`<run.dir>/ray/session_latest/logs`, printed at start)
    namespace: str = "flywheel"
    cpus: ClusterCpus = field(default_factory=ClusterCpus)
    resources: ClusterResources = field(default_factory=ClusterResources)
    placement_timeout_s: float = 300.0  # the learner's placement group must be placed by then (else: what is missing)
    gloo_socket_ifname: str | None = None  # GLOO_SOCKET_IFNAME for every worker (the interface gloo groups use)
    nccl_socket_ifname: str | None = None  # NCCL_SOCKET_IFNAME for every worker


@dataclass
class WandbConfig:
    enabled: bool = True  # offline unless WANDB_API_KEY is set
    project: str = "flywheel"


@dataclass
class MetricsConfig:
    enabled: bool = True  # every actor, shard and learner rank sets its Ray metrics (launch/metrics.py)
    every_s: float = 5.0  # how often; Ray drops a gauge not set for ~30 s


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


@dataclass
class StorageConfig:
    """Where what another node must read lives: learner checkpoints (with each shard's replay),
    replay exports and the embedded model. On a cluster, a filesystem every node mounts at the
    same path (checked from every node at start); null: the run's own directory (one machine)."""

    root: str | None = None


@dataclass
class RunConfig:
    max_minutes: float = 15.0
    progress_every_s: float = 10.0
    dir: str = "runs/${now:%Y%m%d-%H%M%S}"


@dataclass
class Config:
    seed: int = 0
    model: ModelConfig = MISSING
    engine: EngineConfig = MISSING
    env: EnvConfig = MISSING
    algorithm: AlgorithmConfig = MISSING
    buffer: BufferConfig = MISSING
    learner: LearnerConfig = MISSING
    cluster: ClusterConfig = MISSING
    logger: LoggerConfig = MISSING
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    resume: str | None = None  # auto: the newest complete checkpoint under runs/*/checkpoints; or a path
    run: RunConfig = field(default_factory=RunConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)


# group -> option -> node. The buffer's default is the SFT-on-success replay of the default loop.
GROUPS = {
    "model": {"tiny": ModelConfig},
    "engine": {"vllm_cpu": VLLMCPUConfig, "vllm_gpu": VLLMGPUConfig},
    "env": {"miniwob": MiniWoBConfig},
    "algorithm": {"sft": SFTConfig, "ppo": PPOConfig,
                  "grpo": GRPOConfig(max_response_len="${rollout.max_tokens}")},  # dr_grpo's denominator
    "buffer": {"default": BufferConfig(success_only=True)},
    "learner": {"cpu": LearnerConfig},
    "cluster": {"local": ClusterConfig},
    "logger": {"default": LoggerConfig},
}


def register() -> None:
    """Put the schema and every group option into Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="flywheel_schema", node=Config)
    for group, options in GROUPS.items():
        for name, node in options.items():
            store.store(group=group, name=name, node=node)


register()


def _nearest(full_key: str, choices) -> str:
    parent, _, leaf = full_key.rpartition(".")
    for old, new in RENAMED.items():
        if full_key == old or full_key.startswith(old + "."):
            return f"; it is now {new}{full_key[len(old):]}"
    close = difflib.get_close_matches(leaf, list(choices), n=1, cutoff=0.5)
    prefix = f"{parent}." if parent else ""
    if close:
        return f"; did you mean {prefix}{close[0]}?"
    return f"; valid keys of {parent or 'the config'}: {', '.join(sorted(choices))}"


def _unknown_key_error(full_key: str, parent_keys) -> ConfigError:
    return ConfigError(f"unknown config key {full_key}{_nearest(full_key, parent_keys)}")


def _node_at(cfg: DictConfig, path: str):
    node = cfg
    for part in [p for p in path.split(".") if p]:
        if not isinstance(node, DictConfig) or part not in node:
            return None
        node = node._get_node(part)
    return node


def check_known_keys(cfg: DictConfig, path: str = "") -> None:
    """Every key of every node backed by a dataclass is one of its fields (Hydra lets `+key=`
    add keys to a structured node; they would be dropped silently)."""
    kind = OmegaConf.get_type(cfg)
    if dataclasses.is_dataclass(kind):
        names = [f.name for f in dataclasses.fields(kind)]
        for key in cfg:
            if key not in names:
                raise _unknown_key_error(f"{path}{key}", names)
    for key in cfg:
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            check_known_keys(child, f"{path}{key}.")


def _explain(err: Exception, composed_without: DictConfig | None) -> ConfigError:
    """The OmegaConf error under a Hydra composition error, as a ConfigError naming the key."""
    cause: BaseException | None = err
    while cause is not None:
        full_key = getattr(cause, "full_key", None)
        if isinstance(cause, OmegaConfBaseException) and full_key:
            parent_path = full_key.rpartition(".")[0]
            parent = _node_at(composed_without, parent_path) if composed_without is not None else None
            if "not in" in str(cause) or "Missing key" in str(cause) or "Key '" in str(cause):
                kind = OmegaConf.get_type(parent) if isinstance(parent, DictConfig) else None
                keys = ([f.name for f in dataclasses.fields(kind)] if dataclasses.is_dataclass(kind)
                        else list(parent.keys()) if isinstance(parent, DictConfig) else [])
                return _unknown_key_error(full_key, keys)
            return ConfigError(f"bad value for {full_key}: {str(cause).splitlines()[0]}")
        cause = cause.__cause__ or cause.__context__
    return ConfigError(str(err).splitlines()[0])


def _is_choice(override: str) -> bool:
    """A config-group choice (engine=vllm_gpu, +exp=webgym), not a value."""
    key = override.lstrip("+~").split("=", 1)[0]
    return "." not in key and (key in GROUPS or (CONFIG_DIR / key).is_dir())


def compose_config(overrides: list[str]) -> DictConfig:
    """The composed DictConfig for `overrides` (Hydra's compose API), every key checked."""
    overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        try:
            cfg = compose("config", overrides=overrides)
        except (HydraException, OmegaConfBaseException) as err:
            try:
                base = compose("config", overrides=[o for o in overrides if _is_choice(o)])
            except (HydraException, OmegaConfBaseException):
                base = None
            raise _explain(err, base) from err
    check_known_keys(cfg)
    return cfg


def check_overrides(args: list[str]) -> None:
    """Compose the command line's overrides (flags such as --cfg are Hydra's) and raise a
    ConfigError for what the schema refuses; run before Hydra's own main, so nothing starts."""
    to_config(compose_config([a for a in args if "=" in a and not a.startswith("-")]))


def to_config(cfg: DictConfig) -> Config:
    """The typed Config of a composed DictConfig (interpolations resolved, dataclass checks run)."""
    check_known_keys(cfg)
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise _explain(err, cfg) from err
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from err
