"""SampleClient: how the learner asks one shard for samples and sends priority updates (a DEALER,
buffer/net/dealer.py). Not thread-safe: one per thread. For several shards see buffer/net/sharded_clients.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np

from buffer.net.dealer import Dealer, ShardError
from buffer.wire.decode import decode
from buffer.wire.schema import FLOAT32, INT32, Trajectory

_I64, _F64 = np.dtype("<i8"), np.dtype("<f8")


def decode_item(item: dict[str, Any]) -> dict[str, Any]:
    out = dict(item)
    out["prompt_ids"] = np.frombuffer(item["prompt_ids"], dtype=INT32)
    out["response_ids"] = np.frombuffer(item["response_ids"], dtype=INT32)
    out["logprobs"] = np.frombuffer(item["logprobs"], dtype=FLOAT32)
    return out


def decode_group(g: dict[str, Any]) -> dict[str, Any]:
    return {
        "group_id": g["group_id"],
        "trajectories": [decode(f, 1 << 40) for f in g["frames"]],
        "keys": [np.frombuffer(k, _I64) for k in g["keys"]],
        "probability": g["probability"],
        "weight": g["weight"],
    }


class SampleClient(Dealer):
    """Asks one shard for samples and sends priority updates, one request at a time.

    sample(n) returns n step items (arrays decoded to read-only numpy arrays), [] if the shard is
    empty or rate-limited (see `last_reply["status"]`); raises ShardError on an error reply and
    TimeoutError if no reply comes in time. Items carry `key` (for update_priorities),
    `probability`, `priority` and `loss_weight` (the importance weight) besides the contract's keys.

    Not guaranteed: a request sent again after a reconnect may have been served by the shard
    before it went down too (its samples then count twice for the rate limiter, a priority
    update is applied twice: the same values).
    """

    def __init__(self, address: str, timeout_s: float = 30.0, resolve: Callable[[], str | None] | None = None):
        super().__init__(address, timeout_s, resolve)
        self.last_reply: dict[str, Any] = {}
        self.resends = 0
        self._open: tuple[int, bytes, bytes] | None = None  # the last request: (req id, op, body)

    def request(self, op: bytes, body: dict[str, Any] | bytes) -> int:
        """Send without waiting; pair with `reply(req_id)`."""
        body = body if isinstance(body, bytes) else msgpack.packb(body, use_bin_type=True)
        self._reconnected()  # a reconnect before this send must not make reply() send it twice
        req = self._send(op, body)
        self._open = (req, op, body)
        return req

    def reply(self, req: int, what: str = "request") -> dict[str, Any]:
        """The reply to `req`. If the connection drops and comes back meanwhile (the shard was
        restarted) and `req` is this client's last request, it is sent again, and a reply to
        either copy answers it."""
        deadline = time.monotonic() + self.timeout_s
        wanted = {req}
        while True:
            ready = dict(self._poller.poll(self.poll_ms(max(0, int((deadline - time.monotonic()) * 1000)))))
            back = (self._monitor in ready or self._dropped) and self._reconnected()
            if back and self._open and self._open[0] == req:
                wanted.add(self._send(*self._open[1:]))
                self.resends += 1
                deadline = time.monotonic() + self.timeout_s  # the shard is back: a fresh wait
            if self._sock not in ready:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"shard at {self.address} did not answer {what} in {self.timeout_s}s")
                continue
            got_req, reply = self._read()
            if got_req not in wanted:  # a late answer to an earlier request that timed out
                continue
            if reply.get("status") == "error":
                raise ShardError(reply)
            return reply

    def call(self, op: bytes, body: dict[str, Any] | bytes, what: str = "request") -> dict[str, Any]:
        return self.reply(self.request(op, body), what)

    @staticmethod
    def sample_body(n: int, policy_version: int | None = None, timeout_ms: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"n": n}
        if policy_version is not None:
            body["policy_version"] = policy_version
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        return body

    def sample(self, n: int, *, policy_version: int | None = None, timeout_ms: int | None = None) -> list[dict[str, Any]]:
        reply = self.call(b"sample", self.sample_body(n, policy_version, timeout_ms), f"sample({n})")
        items = reply.pop("items", [])
        self.last_reply = reply
        return [decode_item(it) for it in items]

    def sample_groups(
        self, n: int, *, policy_version: int | None = None, timeout_ms: int | None = None
    ) -> list[dict[str, Any]]:
        """n complete groups: {"group_id", "trajectories": [Trajectory], "keys": [int64 array per
        trajectory], "probability", "weight"}; [] when none is drawable or rate-limited."""
        reply = self.call(b"sample_groups", self.sample_body(n, policy_version, timeout_ms), f"sample_groups({n})")
        groups = reply.pop("groups", [])
        self.last_reply = reply
        return [decode_group(g) for g in groups]

    def update_priorities(self, keys: Any, priorities: Any) -> dict[str, Any]:
        """Set new priorities for sampled steps by key. Returns {"updated", "stale"}."""
        body = {
            "keys": np.asarray(keys, dtype=_I64).tobytes(),
            "priorities": np.asarray(priorities, dtype=_F64).tobytes(),
        }
        return self.call(b"update_priorities", body, "update_priorities")

    def info(self, policy_version: int | None = None) -> dict[str, Any]:
        body = {} if policy_version is None else {"policy_version": policy_version}
        return self.call(b"info", body, "info")

    def get(self, traj_ids: list[str]) -> dict[str, tuple[Trajectory, np.ndarray]]:
        """The stored trajectories (and their step priorities) among `traj_ids`."""
        reply = self.call(b"get", {"traj_ids": list(traj_ids)}, "get")
        prios = reply.get("priorities", {})
        return {t: (decode(f, 1 << 40), np.frombuffer(prios[t], _F64)) for t, f in reply.get("frames", {}).items()}

    def stats(self) -> dict[str, Any]:
        return self.call(b"stats", {}, "stats")

    def snapshot(self) -> bool:
        """Ask the shard to start a snapshot now. False when one is already being written."""
        return bool(self.call(b"snapshot", {}, "snapshot").get("started"))
