"""Where the current Ray process is and whether Ray restarted it (`max_restarts`): a restarted
shard or rollout actor must not redo what its first start did once (restore a resume's replay
file, replay its predecessor's task seeds), and a server binds its node's own address. Importing
this does not import Ray.

Not guaranteed: an answer outside a Ray actor other than False (tasks and drivers have none);
outside Ray, node_address() is 127.0.0.1.
"""

from __future__ import annotations


def restarted_by_ray() -> bool:
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return False
    return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def node_address() -> str:
    """This node's address as Ray knows it (what other nodes reach it by); 127.0.0.1 outside Ray."""
    import ray

    return ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
