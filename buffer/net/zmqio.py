"""Multipart receive and send on the hot paths (shard server, insert client), with plain int flags.

pyzmq's `send_multipart` computes `zmq.SNDMORE | flags` per frame and `recv_multipart` asks
RCVMORE through the option-name machinery; with the constants being IntFlag enums each of those
builds an enum member (~1 µs). At ~10k messages/s, on two shared cores, that was a visible share
of the server's time per message, so these loops use ints.

Not guaranteed: the same semantics as pyzmq's own calls otherwise (copying receive, zmq.Again
from a NOBLOCK receive when nothing is ready, ZMQError on a failed send).
"""

from __future__ import annotations

import zmq

NOBLOCK = int(zmq.NOBLOCK)
SNDMORE = int(zmq.SNDMORE)
RCVMORE = int(zmq.RCVMORE)


def recv_frames(sock: zmq.Socket, flags: int = NOBLOCK) -> list[bytes]:
    """All frames of the next message (raises zmq.Again with NOBLOCK when none is ready)."""
    recv, more = sock.recv, sock.getsockopt
    parts = [recv(flags)]
    while more(RCVMORE):
        parts.append(recv(flags))
    return parts


def send_frames(sock: zmq.Socket, parts: list[bytes], flags: int = 0, copy_last: bool = True) -> None:
    """Send one multipart message; flags apply to every frame (NOBLOCK to never wait).
    copy_last=False sends the last frame (a large body) without copying it when pyzmq deems it
    large enough (its copy_threshold)."""
    send = sock.send
    more = flags | SNDMORE
    for part in parts[:-1]:
        send(part, more)
    send(parts[-1], flags, copy=copy_last)

