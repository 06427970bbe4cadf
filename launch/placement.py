"""Where components run on a Ray cluster.

- The learner's ranks share one placement group, one bundle per rank (its CPUs, its GPU on NCCL,
  and `cluster.resources.learner`), packed on one node when they fit: DeepSpeed's ranks meet
  fastest there. Rank r lives in bundle r.
- The DeepSpeed master is rank 0's: its address is rank 0's node (or `cluster.host` when set) and
  its port is picked on that node, by a zero-CPU task in rank 0's bundle.
- Rollout actors and shards ask for `cluster.resources.actor` / `.shard`: "NAME" asks 0.01 of a
  custom resource (steers to the nodes that offer it, never limits how many), "NAME:AMOUNT" that
  much.

NOT guaranteed: the master's port is free when rank 0 binds it (picked moments before, on the
same node); a group that cannot be placed is reported after `cluster.placement_timeout_s`, not
sooner.
"""

from __future__ import annotations

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from launch.config import Config
from weights.group import free_port

STEER = 0.01  # what "NAME" asks of a custom resource


def resource_request(spec: str | None, key: str) -> dict[str, float]:
    """"replay" -> {"replay": 0.01}; "rollout:1" -> {"rollout": 1.0}; None -> {}."""
    if not spec:
        return {}
    name, _, amount = spec.partition(":")
    try:
        value = float(amount) if amount else STEER
    except ValueError:
        value = -1.0
    if not name or value <= 0:
        raise ValueError(f"{key}={spec!r}: expected NAME or NAME:AMOUNT with AMOUNT > 0 (a custom Ray resource)")
    return {name: value}


def learner_bundle(cfg: Config) -> dict[str, float]:
    bundle = {"CPU": cfg.cluster.cpus.learner, **resource_request(cfg.cluster.resources.learner,
                                                                  "cluster.resources.learner")}
    if cfg.learner.backend == "nccl":
        bundle["GPU"] = 1.0
    return bundle


def learner_group(cfg: Config) -> PlacementGroup:
    """The learner's placement group, placed; a clear error naming what is missing otherwise."""
    bundle, n = learner_bundle(cfg), cfg.learner.world_size
    group = placement_group([dict(bundle) for _ in range(n)], strategy="PACK")
    try:
        ray.get(group.ready(), timeout=cfg.cluster.placement_timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(group)
        raise RuntimeError(
            f"the learner's {n} rank(s), each {bundle}, could not be placed within "
            f"{cfg.cluster.placement_timeout_s:g} s (cluster.placement_timeout_s); the cluster has "
            f"{ray.cluster_resources()} in all and {ray.available_resources()} free") from None
    return group


def in_bundle(group: PlacementGroup, index: int) -> PlacementGroupSchedulingStrategy:
    return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index,
                                            placement_group_capture_child_tasks=False)


@ray.remote(num_cpus=0)
def _address_here(host: str | None) -> tuple[str, int]:
    ip = host or ray.util.get_node_ip_address()
    return ip, free_port(ip)


def master_address(group: PlacementGroup, host: str | None) -> tuple[str, int]:
    """(address, port) for DeepSpeed's rendezvous, picked on rank 0's node."""
    return ray.get(_address_here.options(scheduling_strategy=in_bundle(group, 0)).remote(host))
