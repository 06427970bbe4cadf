"""Clients of one shard: InsertClient (actors) and SampleClient (learner). DEALER sockets, msgpack.

Each request carries an 8-byte big-endian request id counting from 1; the shard echoes it, which
is how a DEALER matches a reply to its request. Neither client is thread-safe: one per thread.
For several shards see buffer/sharded.py.

InsertClient keeps each unacknowledged frame until its ack arrives, and sends every one of them
again when the connection to the shard comes back after a drop (a restarted shard on the same
address), when the shard answers "retry" (rate limited), and, if `resend_after_s` is set, when an
ack is that late. A resend gets a new request id; a reply to any of an insert's ids acknowledges
it. The shard is idempotent on traj_id, so a resent insert is stored once.

Not guaranteed:
- Delivery to a shard that comes back on a different address: make a new client.
- After a TimeoutError the unacknowledged inserts stay pending (a late ack is still matched).
- Resent duplicates cost a round trip each and show up in the shard's `duplicates` counter; the
  replies to an insert's other request ids, if they ever come, are counted as "unmatched".
- A shard slower than `resend_after_s` gets the same insert again and again (each copy is
  answered "duplicate"): keep it well above the shard's worst ack latency.
- close() drops whatever is still unacknowledged; call flush() first.
"""

from __future__ import annotations

import struct
import time
from collections import Counter, OrderedDict, deque
from typing import Any, Self

import msgpack
import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from buffer.schema import FLOAT32, INT32, Trajectory, encode
from buffer.wire_decode import decode
from buffer.zmqio import NOBLOCK, recv_frames, send_frames

_REQ = struct.Struct(">Q")
_I64, _F64 = np.dtype("<i8"), np.dtype("<f8")


class _Pending:
    __slots__ = ("done", "frame", "reqs", "sent", "traj_id")

    def __init__(self, traj_id: str | None, frame: bytes, sent: float, reqs: list[int]):
        self.traj_id, self.frame, self.sent, self.reqs, self.done = traj_id, frame, sent, reqs, False


class ShardError(RuntimeError):
    """The shard answered a request with status "error"."""

    def __init__(self, reply: dict[str, Any]):
        super().__init__(f"{reply.get('error')}: {reply.get('detail')}")
        self.reply = reply


def _bad_reply(detail: str) -> dict[str, Any]:
    return {"status": "error", "error": "bad_reply", "detail": detail}


class _Dealer:
    def __init__(self, address: str, timeout_s: float):
        self.address = address
        self.timeout_s = timeout_s
        self._sock = zmq.Context.instance().socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        # A send never waits forever, even if no shard ever connects and the queue fills.
        self._sock.setsockopt(zmq.SNDTIMEO, max(1, int(timeout_s * 1000)))
        self._sock.connect(address)
        self._next_req = 1

    def _send(self, op: bytes, body: bytes) -> int:
        req = self._next_req
        self._next_req += 1
        try:
            send_frames(self._sock, [op, _REQ.pack(req), body], copy_last=False)
        except zmq.Again:
            raise TimeoutError(f"could not queue a request to {self.address} in {self.timeout_s}s") from None
        return req

    def _recv(self, deadline: float) -> tuple[int, dict[str, Any]] | None:
        """Next reply as (req_id, map), or None at the deadline. Malformed replies -> req_id 0."""
        wait_ms = max(0, int((deadline - time.monotonic()) * 1000))
        if not self._sock.poll(wait_ms, zmq.POLLIN):
            return None
        return self._read()

    def _read(self, flags: int = 0) -> tuple[int, dict[str, Any]]:
        frames = recv_frames(self._sock, flags)
        if len(frames) != 2 or len(frames[0]) != 8:
            return 0, _bad_reply(f"{len(frames)} frames")
        try:
            reply = msgpack.unpackb(frames[1], raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as err:
            reply = _bad_reply(repr(err))
        if not isinstance(reply, dict):
            reply = _bad_reply(f"reply is {type(reply).__name__}")
        return _REQ.unpack(frames[0])[0], reply

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InsertClient(_Dealer):
    """Streams trajectories to one shard with at most `window` unacknowledged (backpressure).

    insert() returns as soon as the frame is queued; it blocks only while `window` inserts are
    in flight, and raises TimeoutError if the shard answers nothing within `timeout_s` (the frame
    is then not sent; "retry" answers count as an answer). `acks` keeps the last `max_acks` final
    replies by traj_id (or "req:<id>" when neither side knows the traj_id); `counts` counts final
    replies by status, `error_codes` by code; `resends` counts frames sent again.
    """

    def __init__(
        self,
        address: str,
        window: int = 64,
        timeout_s: float = 30.0,
        max_acks: int = 100_000,
        resend_after_s: float | None = None,
    ):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        super().__init__(address, timeout_s)
        self.window = window
        self.max_acks = max_acks
        self.resend_after_s = resend_after_s
        self.acks: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.counts: Counter[str] = Counter()
        self.error_codes: Counter[str] = Counter()
        self.sent = 0
        self.resends = 0
        self.reconnects = 0
        self._pending: dict[int, _Pending] = {}  # first req id -> unacknowledged insert
        self._by_req: dict[int, _Pending] = {}  # every req id sent for it (resends add more)
        self._fresh: deque[tuple[str, dict[str, Any]]] = deque(maxlen=max_acks)  # for poll()
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self._dropped = False
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def insert(self, traj_or_bytes: Trajectory | bytes) -> int:
        """Queue one trajectory (a Trajectory or an already encoded frame). Returns the req id."""
        if isinstance(traj_or_bytes, Trajectory):
            frame, traj_id = encode(traj_or_bytes), traj_or_bytes.traj_id
        elif isinstance(traj_or_bytes, (bytes, bytearray, memoryview)):
            frame, traj_id = bytes(traj_or_bytes), None
        else:
            raise TypeError(f"insert takes a Trajectory or bytes, got {type(traj_or_bytes).__name__}")
        if len(self._pending) < self.window:
            self._collect(time.monotonic())  # take the acks that already arrived, no waiting
        else:
            deadline = time.monotonic() + self.timeout_s
            while len(self._pending) >= self.window:
                if self._collect(deadline, wait=True):
                    deadline = time.monotonic() + self.timeout_s  # the shard is alive
                elif time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"shard at {self.address} acknowledged nothing for {self.timeout_s}s "
                        f"({len(self._pending)} inserts in flight, window {self.window})"
                    )
        req = self._send(b"insert", frame)
        entry = _Pending(traj_id, frame, time.monotonic(), [req])
        self._pending[req] = self._by_req[req] = entry
        self.sent += 1
        return req

    def poll(self) -> list[tuple[str, dict[str, Any]]]:
        """Take the acks that have arrived (without waiting), and any that insert() or flush()
        took since the last poll: (traj_id, reply) pairs in arrival order."""
        self._collect(time.monotonic())
        fresh = list(self._fresh)
        self._fresh.clear()
        return fresh

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every insert sent so far is acknowledged, or raise TimeoutError."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while self._pending:
            if not self._collect(deadline, wait=True) and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"shard at {self.address}: {len(self._pending)} inserts unacknowledged after {timeout_s}s"
                )

    def resend_pending(self) -> int:
        """Send every unacknowledged frame again (under new request ids; a reply to any of an
        insert's request ids acknowledges it). Returns how many."""
        for entry in list(self._pending.values()):
            self._resend(entry)
        return len(self._pending)

    def _resend(self, entry: _Pending) -> None:
        req = self._send(b"insert", entry.frame)
        entry.reqs.append(req)
        entry.sent = time.monotonic()
        self._by_req[req] = entry
        self.resends += 1

    def _watch_connection(self) -> None:
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event == zmq.EVENT_DISCONNECTED:
                self._dropped = True
            elif event == zmq.EVENT_CONNECTED and self._dropped:
                self._dropped = False
                self.reconnects += 1
                self.resend_pending()

    def _resend_late(self) -> None:
        if self.resend_after_s is None:
            return
        now = time.monotonic()
        for entry in list(self._pending.values()):
            if now - entry.sent > self.resend_after_s:
                self._resend(entry)

    def _collect(self, deadline: float, wait: bool = False) -> int:
        """Record every reply that is ready; with wait=True, first wait for one until deadline.
        Returns how many replies arrived (final or "retry"). One poll covers the socket and
        the connection monitor; the replies that are ready are then read without polling."""
        got = 0
        while True:
            now = time.monotonic()
            wait_until = deadline if wait and not got else now
            if self.resend_after_s is not None:
                wait_until = min(wait_until, now + self.resend_after_s)
            sock_ready = monitor_ready = False
            for r, _ in self._poller.poll(max(0, int((wait_until - now) * 1000))):
                if r is self._sock:
                    sock_ready = True
                else:
                    monitor_ready = True
            if monitor_ready:
                self._watch_connection()
            if not sock_ready:
                self._resend_late()  # only once no reply is waiting to be read
                if monitor_ready or (wait and not got and time.monotonic() < deadline):
                    continue
                return got
            while True:
                try:
                    req, reply = self._read(NOBLOCK)
                except zmq.Again:
                    break
                got += 1
                self._take(req, reply)

    def _take(self, req: int, reply: dict[str, Any]) -> None:
        entry = self._by_req.pop(req, None)
        if entry is None or entry.done:
            self.counts["unmatched"] += 1  # unknown, or a second reply for an acked insert
        elif reply.get("status", "error") == "retry":  # rate limited: send it again
            self._resend(entry)
        else:
            self._complete(entry, req, reply)

    def _complete(self, entry: _Pending, req: int, reply: dict[str, Any]) -> None:
        entry.done = True
        del self._pending[entry.reqs[0]]
        for r in entry.reqs:  # later replies to its other ids count as unmatched
            self._by_req.pop(r, None)
        status = reply.get("status", "error")
        traj_id = entry.traj_id or reply.get("traj_id") or f"req:{req}"
        self.counts[status] += 1
        if status == "error":
            self.error_codes[str(reply.get("error"))] += 1
        self.acks[traj_id] = reply
        self.acks.move_to_end(traj_id)
        self._fresh.append((traj_id, reply))
        while len(self.acks) > self.max_acks:
            self.acks.popitem(last=False)

    def close(self) -> None:
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        super().close()


def _decode_item(item: dict[str, Any]) -> dict[str, Any]:
    out = dict(item)
    out["prompt_ids"] = np.frombuffer(item["prompt_ids"], dtype=INT32)
    out["response_ids"] = np.frombuffer(item["response_ids"], dtype=INT32)
    out["logprobs"] = np.frombuffer(item["logprobs"], dtype=FLOAT32)
    return out


def _decode_group(g: dict[str, Any]) -> dict[str, Any]:
    return {
        "group_id": g["group_id"],
        "trajectories": [decode(f, 1 << 40) for f in g["frames"]],
        "keys": [np.frombuffer(k, _I64) for k in g["keys"]],
        "probability": g["probability"],
        "weight": g["weight"],
    }


class SampleClient(_Dealer):
    """Asks one shard for samples and sends priority updates, one request at a time.

    sample(n) returns n step items (arrays decoded to read-only numpy arrays), [] if the shard is
    empty or rate-limited (see `last_reply["status"]`); raises ShardError on an error reply and
    TimeoutError if no reply comes in time. Items carry `key` (for update_priorities),
    `probability`, `priority` and `loss_weight` (the importance weight) besides the contract's keys.
    """

    def __init__(self, address: str, timeout_s: float = 30.0):
        super().__init__(address, timeout_s)
        self.last_reply: dict[str, Any] = {}

    def request(self, op: bytes, body: dict[str, Any] | bytes) -> int:
        """Send without waiting; pair with `reply(req_id)`."""
        return self._send(op, body if isinstance(body, bytes) else msgpack.packb(body, use_bin_type=True))

    def reply(self, req: int, what: str = "request") -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        while True:
            r = self._recv(deadline)
            if r is None:
                raise TimeoutError(f"shard at {self.address} did not answer {what} in {self.timeout_s}s")
            got_req, reply = r
            if got_req != req:  # a late answer to an earlier request that timed out
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
        return [_decode_item(it) for it in items]

    def sample_groups(
        self, n: int, *, policy_version: int | None = None, timeout_ms: int | None = None
    ) -> list[dict[str, Any]]:
        """n complete groups: {"group_id", "trajectories": [Trajectory], "keys": [int64 array per
        trajectory], "probability", "weight"}; [] when none is drawable or rate-limited."""
        reply = self.call(b"sample_groups", self.sample_body(n, policy_version, timeout_ms), f"sample_groups({n})")
        groups = reply.pop("groups", [])
        self.last_reply = reply
        return [_decode_group(g) for g in groups]

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
