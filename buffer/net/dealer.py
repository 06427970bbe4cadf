"""Dealer: the DEALER side both shard clients share (buffer/net/insert_client.py's InsertClient,
buffer/net/sample_client.py's SampleClient).

Each request carries an 8-byte big-endian request id counting from 1; the shard echoes it, which
is how a DEALER matches a reply to its request. A monitor on the socket tells when the connection
to the shard came back after a drop, which is when a client sends again what is still unanswered.

Not guaranteed: thread safety (one client per thread).
"""

from __future__ import annotations

import struct
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
    def __init__(self, address: str, timeout_s: float):
        self.address = address
        self.timeout_s = timeout_s
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
            elif event == zmq.EVENT_CONNECTED and self._dropped:
                self._dropped, back = False, True
        return back

    def close(self) -> None:
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close(linger=0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


