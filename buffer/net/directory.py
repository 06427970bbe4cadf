"""ShardDirectory: where each replay shard is now, as the shard itself publishes it through Ray.

A shard binds its node's address on a port picked there (buffer/shard_actor.py) and answers
`address()`; after Ray restarts it, possibly on another node, the answer changes. Clients given
`directory.resolver(i)` (buffer/net/dealer.py) ask it when their connection has been down for a
while and follow the shard.

NOT guaranteed: an answer while the shard is restarting (the lookup waits up to `timeout_s`, then
answers None: ask again later); anything outside a Ray worker or driver.
"""

from __future__ import annotations

from collections.abc import Callable

import ray


class ShardDirectory:
    def __init__(self, names: list[str], namespace: str | None, timeout_s: float = 10.0):
        self.names, self.namespace, self.timeout_s = list(names), namespace, timeout_s
        self.lookups = 0

    def lookup(self, index: int) -> str | None:
        """Shard `index`'s address now; None if it did not answer within timeout_s."""
        self.lookups += 1
        try:
            shard = ray.get_actor(self.names[index], namespace=self.namespace)
            return ray.get(shard.address.remote(), timeout=self.timeout_s)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError, ValueError):
            return None  # restarting, gone for now, or not (yet) registered under its name

    def resolver(self, index: int) -> Callable[[], str | None]:
        return lambda: self.lookup(index)
