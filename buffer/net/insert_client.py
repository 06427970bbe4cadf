"""InsertClient: how rollout actors stream trajectories to one shard (a DEALER, buffer/net/dealer.py).
Not thread-safe: one per thread. The learner's side is buffer/net/sample_client.py; for several
shards see buffer/net/sharded_clients.py.

InsertClient keeps each unacknowledged frame until its ack arrives, and sends every one of them
again when the connection to the shard comes back after a drop (a restarted shard on the same
address), when the shard answers "retry" (rate limited), and, if `resend_after_s` is set, when an
ack is that late. A resend gets a new request id; a reply to any of an insert's ids acknowledges
it. The shard is idempotent on traj_id, so a resent insert is stored once.

A shard that comes back on a different address (Ray restarted it elsewhere) is followed when the
client has `resolve` (buffer/net/dealer.py), and its unacknowledged inserts are sent there.

Not guaranteed:
- Delivery to a shard that comes back on a different address without `resolve`.
- After a TimeoutError the unacknowledged inserts stay pending (a late ack is still matched).
- Resent duplicates cost a round trip each and show up in the shard's `duplicates` counter; the
  replies to an insert's other request ids, if they ever come, are counted as "unmatched".
- A shard slower than `resend_after_s` gets the same insert again and again (each copy is
  answered "duplicate"): keep it well above the shard's worst ack latency.
- close() drops whatever is still unacknowledged; call flush() first.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from typing import Any

import zmq

from buffer.net.dealer import Dealer
from buffer.net.zmqio import NOBLOCK
from buffer.wire.schema import Trajectory, encode


class _Pending:
    __slots__ = ("done", "frame", "reqs", "sent", "traj_id")

    def __init__(self, traj_id: str | None, frame: bytes, sent: float, reqs: list[int]):
        self.traj_id, self.frame, self.sent, self.reqs, self.done = traj_id, frame, sent, reqs, False



class InsertClient(Dealer):
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
        resolve: Callable[[], str | None] | None = None,
    ):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        super().__init__(address, timeout_s, resolve)
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
        if self._reconnected():
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
            for r, _ in self._poller.poll(self.poll_ms(max(0, int((wait_until - now) * 1000)))):
                if r is self._sock:
                    sock_ready = True
                else:
                    monitor_ready = True
            if monitor_ready or self._dropped:
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
