"""Whether the current process is a Ray actor that Ray restarted (`max_restarts`): a restarted
shard or rollout actor must not redo what its first start did once (restore a resume's replay
file, replay its predecessor's task seeds). Importing this does not import Ray.

Not guaranteed: an answer outside a Ray actor other than False (tasks and drivers have none).
"""

from __future__ import annotations


def restarted_by_ray() -> bool:
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return False
    return bool(ray.get_runtime_context().was_current_actor_reconstructed)
