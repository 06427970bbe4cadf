"""Dealer: the DEALER side both shard clients share (buffer/net/insert_client.py's InsertClient,
buffer/net/sample_client.py's SampleClient).

Each request carries an 8-byte big-endian request id counting from 1; the shard echoes it, which
is how a DEALER matches a reply to its request. A monitor on the socket tells when the connection
to the shard came back after a drop, which is when a client sends again what is still unanswered.

A shard that Ray restarts binds a new port, possibly on another node. Given `resolve` (a callable
answering the shard's current address, e.g. buffer/net/directory.py's lookup through Ray, or None
while it is unknown), a client whose connection has been down for `follow_after_s` asks it, at
most once per `follow_after_s`, and moves to the new address; the reconnect then resends as above.

Not guaranteed: thread safety (one client per thread); `resolve` blocks the client while it runs.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any, Self

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from buffer.net.zmqio import recv_frames, send_frames

_REQ = struct.Struct(">Q")


class ShardError(RuntimeError):
    """The shard answered a request with status "error"."""

    def __init__(self, reply: dict[str, Any]):
        super().__init__(f"{reply.get('error')}: {reply.get('detail')}")
        self.reply = reply


def _bad_reply(detail: str) -> dict[str, Any]:
    return {"status": "error", "error": "bad_reply", "detail": detail}


class Dealer:
    def __init__(self, address: str, timeout_s: float, resolve: Callable[[], str | None] | None = None,
                 follow_after_s: float = 1.0):
        self.address = address
        self.timeout_s = timeout_s
        self.resolve, self.follow_after_s = resolve, follow_after_s
        self.moves = 0
        self._dropped_at = 0.0
        self._sock = zmq.Context.instance().socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        # A send never waits forever, even if no shard ever connects and the queue fills.
        self._sock.setsockopt(zmq.SNDTIMEO, max(1, int(timeout_s * 1000)))
        self._sock.connect(address)
        self._next_req = 1
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self._dropped = False
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)

    def _send(self, op: bytes, body: bytes) -> int:
        req = self._next_req
        self._next_req += 1
        try:
            send_frames(self._sock, [op, _REQ.pack(req), body], copy_last=False)
        except zmq.Again:
            raise TimeoutError(f"could not queue a request to {self.address} in {self.timeout_s}s") from None
        return req

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

    def _reconnected(self) -> bool:
        """Read the connection monitor's events; True when the connection to the shard came back
        after a drop (a restarted shard on the same address)."""
        back = False
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event == zmq.EVENT_DISCONNECTED:
                self._dropped = True
                self._dropped_at = time.monotonic()
            elif event == zmq.EVENT_CONNECTED and self._dropped:
                self._dropped, back = False, True
        if self._dropped and not back:
            self._follow()
        return back

    def _follow(self) -> None:
        """Down for follow_after_s: ask where the shard is now and move there if it moved."""
        if self.resolve is None or time.monotonic() - self._dropped_at < self.follow_after_s:
            return
        self._dropped_at = time.monotonic()  # the next ask is follow_after_s from now
        address = self.resolve()
        if address and address != self.address:
            self.move_to(address)

    def move_to(self, address: str) -> None:
        """Connect to `address` instead; unanswered requests are resent once it connects."""
        self._sock.disconnect(self.address)
        self._sock.connect(address)
        self.address, self._dropped = address, True
        self.moves += 1

    def poll_ms(self, wait_ms: int) -> int:
        """How long one poll may wait: while the connection is down and can be followed, short
        enough to ask again in time."""
        if self._dropped and self.resolve is not None:
            return min(wait_ms, int(self.follow_after_s * 1000))
        return wait_ms

    def close(self) -> None:
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close(linger=0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


