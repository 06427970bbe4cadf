"""A real multi-node Ray cluster on this one machine, for tests: every node is `ray start` with its
own `--node-ip-address` in 127.0.0.0/8 (never 127.0.0.1: a Ray 2.60 head given it reports the
machine's interface address instead), its CPUs and its custom resources.

Every process the nodes start (GCS, raylets, agents, workers, the drivers started with `env`)
carries a marker in its environment, so `kill_node` and `stop` end exactly this cluster's
processes and no other Ray on the machine. Token authentication is on (as Ray 2.60 has it for
local clusters) with a token of this cluster's own, passed to nodes and drivers through `env`.

NOT guaranteed: ports stay free between picking and `ray start`; Windows or macOS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from weights.group import free_port

RAY = str(Path(sys.executable).parent / "ray")


@dataclass
class Node:
    ip: str
    cpus: float
    resources: dict[str, float] = field(default_factory=dict)


class LoopbackCluster:
    def __init__(self, temp_dir: str, nodes: list[Node]):
        self.temp_dir, self.nodes = temp_dir, nodes
        self.marker = uuid.uuid4().hex
        self.port = free_port(nodes[0].ip)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex,
                    "FLYWHEEL_TEST_CLUSTER": self.marker, "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)

    @property
    def address(self) -> str:
        return f"{self.nodes[0].ip}:{self.port}"

    def start(self) -> LoopbackCluster:
        head, *workers = self.nodes
        self._ray_start(head, ["--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}",
                               "--include-dashboard=false"])
        for node in workers:
            self.add(node)
        return self

    def add(self, node: Node) -> None:
        """Start `node` and join it to the cluster."""
        if node not in self.nodes:
            self.nodes.append(node)
        if node is not self.nodes[0]:
            self._ray_start(node, [f"--address={self.address}"])

    def _ray_start(self, node: Node, extra: list[str]) -> None:
        cmd = [RAY, "start", f"--node-ip-address={node.ip}", f"--num-cpus={node.cpus}",
               f"--resources={json.dumps(node.resources)}", "--disable-usage-stats", *extra]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    def processes(self, node_ip: str | None = None) -> list[psutil.Process]:
        """This cluster's processes (those of one node: its raylet and the raylet's descendants)."""
        mine = []
        for p in psutil.process_iter(["pid"]):
            try:
                if p.pid != os.getpid() and p.environ().get("FLYWHEEL_TEST_CLUSTER") == self.marker:
                    mine.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        if node_ip is None:
            return mine
        raylets = [p for p in mine if _is_raylet_of(p, node_ip)]
        return raylets + [c for r in raylets for c in _children(r)]

    def kill_node(self, node_ip: str) -> int:
        """SIGKILL a node's raylet and everything under it, as a lost machine; returns how many."""
        procs = self.processes(node_ip)
        if not procs:
            raise AssertionError(f"no raylet of node {node_ip} found")
        for p in procs:
            _kill(p)
        return len(procs)

    def stop(self) -> None:
        for _ in range(3):  # workers can outlive their raylet by a moment
            procs = self.processes()
            for p in procs:
                _kill(p)
            if not procs:
                return
            time.sleep(1)


def _is_raylet_of(p: psutil.Process, ip: str) -> bool:
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return False
    return "raylet" in cmd.split(" ")[0] and f"--node_ip_address={ip}" in cmd


def _children(p: psutil.Process) -> list[psutil.Process]:
    try:
        return p.children(recursive=True)
    except psutil.Error:
        return []


def _kill(p: psutil.Process) -> None:
    try:
        p.kill()
    except psutil.Error:
        pass
