"""Flywheel on a real three-node Ray cluster on this machine (tests/support/ray_nodes.py): the head
at 127.0.0.11 holds the learner (`learner` resource), 127.0.0.12 the rollout actor (`rollout`),
127.0.0.13 the replay shard (`replay`). `python launch/cluster.py +exp=webgym cluster.address=...`
joins it, with the code shipped through Ray's runtime_env and `storage.root` shared.

While it runs, from a second driver: each server is bound to its own node's address and the
connections between components cross nodes (read with psutil). Then the shard node's raylet is
killed: the shard restarts on a replacement node offering `replay`, the actor's and the learner's
clients follow it, and with `buffer.data_dir` in `storage.root` every trajectory acknowledged
before the kill and after it is in the restarted shard. A checkpoint lands in `storage.root`,
and `resume=auto` continues from it.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
import ray

from launch.storage import check_nodes
from tests.support.loop_system import wait_for
from tests.support.ray_nodes import LoopbackCluster, Node

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(900)
HEAD, ROLLOUT, REPLAY, SPARE = "127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"


@pytest.fixture(scope="module")
def cluster():
    temp = tempfile.mkdtemp(prefix="fwmn", dir="/tmp")  # short: Ray's unix socket paths live under it
    nodes = LoopbackCluster(temp, [Node(HEAD, 2, {"learner": 1}), Node(ROLLOUT, 2, {"rollout": 1}),
                                   Node(REPLAY, 1, {"replay": 1})])
    try:
        yield nodes.start()
    finally:
        nodes.stop()
        assert not nodes.processes(), "a Ray process of the test cluster outlived it"


@pytest.fixture
def driver(cluster):
    """This test process as a second driver of the cluster, in Flywheel's namespace, with the
    cluster's token (Ray reads its auth mode once: refresh it, and again after)."""
    from ray._private.authentication_test_utils import reset_auth_token_state

    keys = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: cluster.env[k] for k in keys})
    reset_auth_token_state()
    ray.init(address=cluster.address, namespace="flywheel", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        reset_auth_token_state()


def launch(cluster, run_dir: Path, storage: Path, minutes: float, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "launch/cluster.py"), "+exp=webgym", f"cluster.address={cluster.address}",
           f"run.dir={run_dir}", f"storage.root={storage}", f"run.max_minutes={minutes}", "run.progress_every_s=10",
           "logger.wandb.enabled=false", "cluster.resources.actor=rollout", "cluster.resources.shard=replay",
           "cluster.resources.learner=learner", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def on_node(handle) -> tuple[str, psutil.Process]:
    ip, pid = ray.get(handle.__ray_call__.remote(lambda self: (ray.util.get_node_ip_address(), os.getpid())),
                      timeout=120)
    return ip, psutil.Process(pid)


def endpoint(address: str) -> tuple[str, int]:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


def tcp(proc: psutil.Process, status: str) -> set[tuple[str, int]]:
    """(local) addresses a process listens on, or (remote) ones it is connected to."""
    conns = proc.net_connections(kind="tcp")
    if status == psutil.CONN_LISTEN:
        return {(c.laddr.ip, c.laddr.port) for c in conns if c.status == status}
    return {(c.raddr.ip, c.raddr.port) for c in conns if c.status == status and c.raddr}


def test_storage_every_node_cannot_see_is_refused_with_the_node_named(driver, tmp_path):
    assert sorted(check_nodes(str(tmp_path), [])) == [HEAD, ROLLOUT, REPLAY]
    with pytest.raises(RuntimeError, match=f"node {ROLLOUT} cannot see {tmp_path}/no-model"):
        check_nodes(str(tmp_path), [str(tmp_path / "no-model")])


def test_a_run_across_three_nodes_survives_losing_its_shard_node_and_resumes(cluster, driver, tmp_path):
    storage = tmp_path / "storage"
    run = launch(cluster, tmp_path / "r1", storage, 3.0, f"buffer.data_dir={storage / 'replay'}")
    try:
        wait_for(lambda: _named("actor-0") and _named("shard-0") and _named("learner-0"), 180, "the named components")
        actor, shard, learner = ray.get_actor("actor-0"), ray.get_actor("shard-0"), ray.get_actor("learner-0")
        wait_for(lambda: ray.get(actor.stats.remote()).get("weight_updates", 0) >= 1, 240, "a first weight update")

        # every server on its own node's address; the data plane crosses nodes
        address = endpoint(ray.get(shard.address.remote()))
        (actor_ip, actor_proc), (shard_ip, shard_proc), (learner_ip, learner_proc) = map(on_node, (actor, shard, learner))
        assert (actor_ip, shard_ip, learner_ip) == (ROLLOUT, REPLAY, HEAD)
        assert address[0] == REPLAY and address in tcp(shard_proc, psutil.CONN_LISTEN)
        assert address in tcp(actor_proc, psutil.CONN_ESTABLISHED)  # actor (.12) -> shard (.13)
        assert address in tcp(learner_proc, psutil.CONN_ESTABLISHED)  # learner (.11) -> shard (.13)
        # the shard's node is lost: a replacement node takes the shard, the clients follow it
        acked_before = set(ray.get(actor.acknowledged.remote()))
        assert acked_before
        cluster.add(Node(SPARE, 1, {"replay": 1}))
        cluster.kill_node(REPLAY)
        moved = wait_for(lambda: _moved(shard, address), 240, "the shard back on another node")
        assert moved[0] == SPARE
        wait_for(lambda: len(ray.get(actor.acknowledged.remote())) > len(acked_before) + 20, 240,
                 "acknowledgements from the moved shard")
        acked = set(ray.get(actor.acknowledged.remote()))
        held = set(ray.get(shard.traj_ids.remote(), timeout=60))
        assert acked_before <= held and acked <= held, f"{len(acked - held)} acknowledged trajectories lost"

        assert run.wait(timeout=400) == 0
        out = run.stdout.read()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert summary["episodes"] > 0 and summary["weight_updates"] > 0, out[-3000:]
    checkpoints = sorted((storage / "r1" / "checkpoints").glob("step-*"))
    assert checkpoints, f"no checkpoint in storage.root:\n{out[-3000:]}"

    again = launch(cluster, tmp_path / "r2", storage, 0.5, "resume=auto")
    out, _ = again.communicate(timeout=400)
    assert again.returncode == 0, out[-3000:]
    resumed = next(json.loads(line) for line in out.splitlines() if line.startswith('{"resume"'))
    assert resumed["resume"] == str(checkpoints[-1])
    step = int(checkpoints[-1].name.split("-")[1])
    assert json.loads((tmp_path / "r2" / "summary.json").read_text())["learner_step"] > step


def _named(name: str) -> bool:
    try:
        ray.get_actor(name)
        return True
    except ValueError:
        return False


def _moved(shard, old: tuple[str, int]):
    try:
        now = endpoint(ray.get(shard.address.remote(), timeout=10))
    except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
        return None
    return now if now != old else None
