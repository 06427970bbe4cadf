"""Clients over S shards: ShardedInsertClient (actors) and ShardedSampleClient (learner).

Routing (buffer/routing.py): a trajectory goes to shard crc32(key) mod S (`shard_for`), where the
key is its group_id when it has one, else its traj_id (`route_key`; the rollout actors use the
same rule).
So the episodes of one GRPO group land on one shard, where the group can complete (routed by
traj_id they scattered and never did), and a resent insert reaches the shard that may already
hold it and is stored once.

Sampling: one batch of n steps is split across shards in proportion to their priority mass
(Σ p^α · recency, brought to the same newest policy version V*), so the union is one prioritized
sample: P(i) = (m_s / M) · P_s(i) = e_i / M. Per batch: one `info` round trip to every shard (in
parallel), a multinomial split, one `sample` round trip to each shard that gets a share. Items
come back with the global `probability` and with importance weights renormalized to the smallest
p^α over all shards, so weights are comparable across shards. `sample_groups` does the same with
whole complete groups: the split follows each shard's complete-group mass (its group sum tree,
brought to V*), weights are renormalized to the smallest group A_g over all shards. Every item
(step or group) carries the index of its shard, where its priority updates go.

Not guaranteed:
- Masses move between the `info` and the `sample` round trips (inserts, other samplers), so
  the split can be off by what changed in that window.
- Shards that answer "retry" (rate limited) or "empty" contribute nothing: a batch can come back
  short; `last_status` says which shards did what.
- Groups are whole only if every member went to one shard: all writers must route with
  `route_key` (a group_id shared by trajectories routed by traj_id still scatters).
- Across shards, the power law and the staleness gate agree only once every shard has heard V*:
  pass `policy_version` (the learner's) or let the client forward the newest V it has seen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Self

import numpy as np

from buffer.net.insert_client import InsertClient
from buffer.net.sample_client import SampleClient, decode_group, decode_item
from buffer.routing import route_key, shard_for
from buffer.wire.decode import decode
from buffer.wire.schema import Trajectory


def weight_scales(infos: list[dict[str, Any]], masses: np.ndarray, replies: dict[int, dict[str, Any]],
                  key: str) -> dict[int, float]:
    """Per replying shard, the factor that renormalizes its importance weights (min_a_s / a)^β to
    the smallest `key` (p^α, or a group's A_g) over all shards with mass."""
    mins = [i[key] for i, m in zip(infos, masses) if m > 0 and i.get(key) is not None]
    mins += [r[key] for r in replies.values() if r.get(key) is not None]
    min_a = min(mins) if mins else None
    scales = {}
    for s, reply in replies.items():
        beta = float(reply.get("beta") or 0.0)
        ok = beta and min_a is not None and reply.get(key)
        scales[s] = (min_a / float(reply[key])) ** beta if ok else 1.0
    return scales


class ShardedInsertClient:
    """One InsertClient per shard; insert() routes by `route_key`. Each keeps its own window."""

    def __init__(
        self,
        addresses: Sequence[str],
        window: int = 64,
        timeout_s: float = 30.0,
        resend_after_s: float | None = None,
    ):
        if not addresses:
            raise ValueError("need at least one shard address")
        self.clients = [InsertClient(a, window=window, timeout_s=timeout_s, resend_after_s=resend_after_s) for a in addresses]

    def insert(self, traj_or_bytes: Trajectory | bytes, traj_id: str | None = None, group_id: str | None = None) -> int:
        """Route and queue one trajectory; returns the shard index it went to. For an encoded
        frame pass its `traj_id` and `group_id` (None or "" when it has none) to skip decoding
        it here."""
        if isinstance(traj_or_bytes, Trajectory):
            traj_id, group_id = traj_or_bytes.traj_id, traj_or_bytes.group_id
        elif traj_id is None:
            traj = decode(bytes(traj_or_bytes), 1 << 40)  # raises WireError on garbage
            traj_id, group_id = traj.traj_id, traj.group_id
        s = shard_for(route_key(traj_id, group_id), len(self.clients))
        self.clients[s].insert(traj_or_bytes)
        return s

    def poll(self) -> list[tuple[str, dict[str, Any]]]:
        return [ack for c in self.clients for ack in c.poll()]

    def flush(self, timeout_s: float | None = None) -> None:
        for c in self.clients:
            c.flush(timeout_s)

    @property
    def acks(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for c in self.clients:
            out.update(c.acks)
        return out

    @property
    def in_flight(self) -> int:
        return sum(c.in_flight for c in self.clients)

    def close(self) -> None:
        for c in self.clients:
            c.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ShardedSampleClient:
    def __init__(self, addresses: Sequence[str], timeout_s: float = 30.0, seed: int | None = None,
                 resolvers: Sequence[Callable[[], str | None]] | None = None):
        """`resolvers[i]`: where shard i is now (see buffer/net/dealer.py), to follow a moved shard."""
        if not addresses:
            raise ValueError("need at least one shard address")
        resolvers = resolvers or [None] * len(addresses)
        self.clients = [SampleClient(a, timeout_s=timeout_s, resolve=r) for a, r in zip(addresses, resolvers)]
        self.rng = np.random.default_rng(seed)
        self.policy_version: int | None = None  # the newest V heard of (or set by the learner)
        self.last_status: list[str] = []
        self.last_counts: list[int] = []

    def _infos(self) -> list[dict[str, Any]]:
        body = {} if self.policy_version is None else {"policy_version": self.policy_version}
        reqs = [c.request(b"info", body) for c in self.clients]
        return [c.reply(r, "info") for c, r in zip(self.clients, reqs)]

    def masses(self, infos: list[dict[str, Any]] | None = None) -> np.ndarray:
        """Each shard's priority mass at the newest version V* any shard reported."""
        infos = infos if infos is not None else self._infos()
        newest = max(int(i["policy_version"]) for i in infos)
        if self.policy_version is None or newest > self.policy_version:
            self.policy_version = newest
        m = np.array([float(i["mass"]) for i in infos])
        for s, i in enumerate(infos):
            if i.get("gamma") is not None and m[s] > 0:  # bring γ^(V_s − v) to γ^(V* − v)
                m[s] *= float(i["gamma"]) ** (newest - int(i["policy_version"]))
        return m

    def split(self, n: int, masses: np.ndarray) -> np.ndarray:
        total = masses.sum()
        if not total > 0:
            return np.zeros(len(masses), dtype=np.int64)
        return self.rng.multinomial(n, masses / total)

    def _fan_out(self, op: bytes, counts: np.ndarray, timeout_ms: int | None) -> dict[int, dict[str, Any]]:
        """One `op` request to every shard with a share (in parallel); their replies by shard."""
        self.last_counts = counts.tolist()
        reqs = {s: self.clients[s].request(op, SampleClient.sample_body(k, self.policy_version, timeout_ms))
                for s, k in enumerate(self.last_counts) if k}
        replies = {s: self.clients[s].reply(r, op.decode()) for s, r in reqs.items()}
        self.last_status = [replies[s]["status"] if s in replies else "none" for s in range(len(self.clients))]
        return replies

    def sample(self, n: int, *, timeout_ms: int | None = None) -> list[dict[str, Any]]:
        """About n steps drawn across all shards as one prioritized sample (see module doc)."""
        infos = self._infos()
        masses = self.masses(infos)
        replies = self._fan_out(b"sample", self.split(n, masses), timeout_ms)
        total = masses.sum()
        scales = weight_scales(infos, masses, replies, "min_a")
        items: list[dict[str, Any]] = []
        for s, reply in replies.items():
            scale, share = scales[s], masses[s] / total
            for it in reply.get("items", []):
                it = decode_item(it)
                it["shard"] = s
                it["probability"] = share * float(it.get("probability", 0.0))
                it["loss_weight"] = float(it["loss_weight"]) * scale
                items.append(it)
        return items

    def group_masses(self, infos: list[dict[str, Any]]) -> np.ndarray:
        """Each shard's complete-group mass at the newest version V* any shard reported."""
        newest = max(int(i["policy_version"]) for i in infos)
        m = np.array([float(i.get("group_mass") or 0.0) for i in infos])
        for s, i in enumerate(infos):
            if i.get("gamma") is not None and m[s] > 0:
                m[s] *= float(i["gamma"]) ** (newest - int(i["policy_version"]))
        return m

    def sample_groups(self, n: int, *, timeout_ms: int | None = None) -> list[dict[str, Any]]:
        """About n complete groups drawn across all shards as one sample (see module doc), in
        SampleClient.sample_groups' form plus "shard"; shards without group sampling
        (no group_size) answer an error (ShardError)."""
        infos = self._infos()
        self.masses(infos)  # learns V*
        masses = self.group_masses(infos)
        replies = self._fan_out(b"sample_groups", self.split(n, masses), timeout_ms)
        scales = weight_scales(infos, masses, replies, "group_min_a")
        total = masses.sum()
        out: list[dict[str, Any]] = []
        for s, reply in replies.items():
            scale = scales[s]
            for g in reply.get("groups", []):
                item = decode_group(g)
                item["shard"] = s
                item["probability"] = masses[s] / total * float(g["probability"])
                item["weight"] = float(g["weight"]) * scale
                out.append(item)
        return out

    def update_priorities(self, items_or_keys: Any, priorities: Any, shards: Any = None) -> dict[str, int]:
        """Send new priorities to the shards the items came from. Pass the sampled items (each
        has "key" and "shard"), or keys with their shard indices."""
        if shards is None:
            keys = [it["key"] for it in items_or_keys]
            shards = [it["shard"] for it in items_or_keys]
        else:
            keys = list(items_or_keys)
        keys = np.asarray(keys, dtype=np.int64)
        shards = np.asarray(shards, dtype=np.int64)
        priorities = np.asarray(priorities, dtype=np.float64)
        reqs = {}
        for s in np.unique(shards).tolist():
            mask = shards == s
            body = {"keys": keys[mask].astype("<i8").tobytes(), "priorities": priorities[mask].astype("<f8").tobytes()}
            reqs[s] = self.clients[s].request(b"update_priorities", body)
        out = {"updated": 0, "stale": 0}
        for s, r in reqs.items():
            reply = self.clients[s].reply(r, "update_priorities")
            out["updated"] += int(reply["updated"])
            out["stale"] += int(reply["stale"])
        return out

    def close(self) -> None:
        for c in self.clients:
            c.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
