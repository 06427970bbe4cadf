"""Clients of a shard: InsertClient (actors) and SampleClient (learner). DEALER sockets, msgpack.

Each request carries an 8-byte big-endian request id counting from 1; the shard echoes it, which
is how a DEALER matches a reply to its request. Neither client is thread-safe: one per thread.

Not guaranteed:
- No retries and no resends. After a TimeoutError the unacknowledged inserts stay pending (a late
  ack is still matched); re-inserting them is safe while the shard still stores them (the shard
  is idempotent on traj_id), but the shard may have stored them already or never seen them.
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

from buffer.schema import FLOAT32, INT32, Trajectory, encode

_REQ = struct.Struct(">Q")


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
            self._sock.send_multipart([op, _REQ.pack(req), body], copy=False)
        except zmq.Again:
            raise TimeoutError(f"could not queue a request to {self.address} in {self.timeout_s}s") from None
        return req

    def _recv(self, deadline: float) -> tuple[int, dict[str, Any]] | None:
        """Next reply as (req_id, map), or None at the deadline. Malformed replies -> req_id 0."""
        wait_ms = max(0, int((deadline - time.monotonic()) * 1000))
        if not self._sock.poll(wait_ms, zmq.POLLIN):
            return None
        frames = self._sock.recv_multipart()
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
    in flight, and raises TimeoutError if no ack frees a slot within `timeout_s` (the frame is
    then not sent). `acks` keeps the last `max_acks` replies by traj_id (or "req:<id>" when
    neither side knows the traj_id); `counts` counts replies by status, `error_codes` by code.
    """

    def __init__(
        self,
        address: str,
        window: int = 64,
        timeout_s: float = 30.0,
        max_acks: int = 100_000,
    ):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        super().__init__(address, timeout_s)
        self.window = window
        self.max_acks = max_acks
        self.acks: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.counts: Counter[str] = Counter()
        self.error_codes: Counter[str] = Counter()
        self.sent = 0
        self._pending: dict[int, str | None] = {}  # req_id -> traj_id if known
        self._fresh: deque[tuple[str, dict[str, Any]]] = deque(maxlen=max_acks)  # for poll()

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
        self._collect(time.monotonic())  # take the acks that already arrived, no waiting
        if len(self._pending) >= self.window:
            deadline = time.monotonic() + self.timeout_s
            while len(self._pending) >= self.window:
                if not self._collect(deadline, wait=True):
                    raise TimeoutError(
                        f"shard at {self.address} acknowledged nothing for {self.timeout_s}s "
                        f"({len(self._pending)} inserts in flight, window {self.window})"
                    )
        req = self._send(b"insert", frame)
        self._pending[req] = traj_id
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
            if not self._collect(deadline, wait=True):
                raise TimeoutError(
                    f"shard at {self.address}: {len(self._pending)} inserts unacknowledged after {timeout_s}s"
                )

    def _collect(self, deadline: float, wait: bool = False) -> int:
        """Record every reply that is ready; with wait=True, first wait for one until deadline."""
        got = 0
        while True:
            r = self._recv(deadline if wait and not got else time.monotonic())
            if r is None:
                return got
            req, reply = r
            got += 1
            if req not in self._pending:
                self.counts["unmatched"] += 1
                continue
            traj_id = self._pending.pop(req) or reply.get("traj_id") or f"req:{req}"
            status = reply.get("status", "error")
            self.counts[status] += 1
            if status == "error":
                self.error_codes[str(reply.get("error"))] += 1
            self.acks[traj_id] = reply
            self.acks.move_to_end(traj_id)
            self._fresh.append((traj_id, reply))
            while len(self.acks) > self.max_acks:
                self.acks.popitem(last=False)


def _decode_item(item: dict[str, Any]) -> dict[str, Any]:
    out = dict(item)
    out["prompt_ids"] = np.frombuffer(item["prompt_ids"], dtype=INT32)
    out["response_ids"] = np.frombuffer(item["response_ids"], dtype=INT32)
    out["logprobs"] = np.frombuffer(item["logprobs"], dtype=FLOAT32)
    return out


class SampleClient(_Dealer):
    """Asks one shard for samples, one request at a time.

    sample(n) returns n step items (arrays decoded to read-only numpy arrays), [] if the shard
    is empty; raises ShardError on an error reply and TimeoutError if no reply comes in time.
    """

    def __init__(self, address: str, timeout_s: float = 30.0):
        super().__init__(address, timeout_s)

    def sample(self, n: int) -> list[dict[str, Any]]:
        req = self._send(b"sample", msgpack.packb({"n": n}))
        deadline = time.monotonic() + self.timeout_s
        while True:
            r = self._recv(deadline)
            if r is None:
                raise TimeoutError(f"shard at {self.address} did not answer sample({n}) in {self.timeout_s}s")
            got_req, reply = r
            if got_req != req:  # a late answer to an earlier request that timed out
                continue
            if reply.get("status") == "error":
                raise ShardError(reply)
            return [_decode_item(it) for it in reply.get("items", [])]
