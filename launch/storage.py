"""What every node must see: `storage.root` (launch/config.py StorageConfig) and the model.

With `storage.root` set, a run keeps its checkpoints (each holding every shard's replay) in
`<root>/<run name>/checkpoints`, `resume=auto` looks in `<root>/*/checkpoints`, relative model
paths and the embedded model's cache are under `<root>`. Without it, all of that stays in the
run's own directory and the project, as on one machine.

`check_nodes(root, paths)` runs a zero-CPU task pinned to each alive node: the node must read
the marker file this driver has just written under `root` (so it sees the same filesystem, not
a directory of the same name) and every path in `paths`; otherwise it raises naming the node.

NOT guaranteed: that the storage stays mounted after the check; write throughput.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

MARKER = ".flywheel-storage-check"


def run_storage(root: str | None, run_dir: str) -> str:
    """Where this run's shared files go: `<root>/<run name>`, or the run directory itself."""
    return os.path.join(root, os.path.basename(os.path.normpath(run_dir))) if root else run_dir


def checkpoint_roots(root: str | None, run_dir: str) -> list[Path]:
    """Where `resume=auto` looks: every run's checkpoints beside this one's."""
    base = Path(root) if root else Path(run_dir).parent
    return sorted(base.glob("*/checkpoints"))


@ray.remote(num_cpus=0)
def _sees(root: str, token: str, paths: list[str]) -> tuple[str, list[str]]:
    missing = []
    marker = Path(root) / MARKER
    try:
        if marker.read_text() != token:
            missing.append(f"{root} (another filesystem: its {MARKER} differs)")
    except OSError:
        missing.append(f"{root} (no {MARKER}: not the driver's storage)")
    missing += [p for p in paths if not os.path.exists(p)]
    return ray.util.get_node_ip_address(), missing


def check_nodes(root: str, paths: list[str], timeout_s: float = 120.0) -> list[str]:
    """Every alive node sees `root` (the same filesystem as the driver) and `paths`; returns
    the nodes' addresses, or raises RuntimeError naming each node and what it cannot see."""
    os.makedirs(root, exist_ok=True)
    token = uuid.uuid4().hex
    (Path(root) / MARKER).write_text(token)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [_sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
        root, token, paths) for n in nodes]
    answers = ray.get(refs, timeout=timeout_s)
    bad = [f"node {ip} cannot see {', '.join(missing)}" for ip, missing in answers if missing]
    if bad:
        raise RuntimeError("storage.root must be one filesystem every node mounts at the same path: "
                           + "; ".join(bad))
    return [ip for ip, _ in answers]
