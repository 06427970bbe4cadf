"""ShardServer: a ZMQ ROUTER in a background thread, serving one ReplayShard.

Protocol (see CONTRACT / ARCHITECTURE "Wire format"): a DEALER sends [op, req_id, body] and gets
[req_id, body_msgpack] back. Ops: b"insert" (body = trajectory frame) and b"sample" (body =
msgpack {"n": int}). Every request gets exactly one reply; a malformed request or an exception
while handling it becomes {"status": "error", ...} and the server keeps serving.

Not guaranteed:
- Replies to messages with the wrong frame count carry the second frame as req_id when it is
  8 bytes long, else 8 zero bytes (clients start their counters at 1, so 0 matches nothing).
- Frames larger than 4 x max_frame_bytes are dropped by ZMQ itself (MAXMSGSIZE) and the
  sender's connection is reset without a reply; frames between the limit and that get an
  "oversized" reply.
- A reply to a client that has gone away is silently dropped (ROUTER semantics).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Self

import msgpack
import numpy as np
import zmq

from buffer.shard import ReplayShard

log = logging.getLogger(__name__)

NO_REQ_ID = bytes(8)
MAX_SAMPLE_N = 8192  # one reply holds all items; this keeps a typo from building a huge one
_POLL_MS = 50  # how long stop() may wait for the loop to notice


def _pack(reply: dict[str, Any]) -> bytes:
    return msgpack.packb(reply, use_bin_type=True)


def _error(code: str, detail: str) -> dict[str, Any]:
    return {"status": "error", "error": code, "detail": detail}


class ShardServer:
    def __init__(
        self,
        shard: ReplayShard,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        lock: threading.Lock | None = None,
        seed: int | None = None,
    ):
        """port=0 picks a free port; `address` is known once start() returns.

        `lock` guards every call into `shard`; share it to read the shard from other threads.
        """
        if host in ("0.0.0.0", "*", ""):
            raise ValueError("bind to the node's address, never to all interfaces")
        self.shard = shard
        self.host, self.port = host, port
        self.lock = lock or threading.Lock()
        self.address: str | None = None
        self._rng = np.random.default_rng(seed)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_error: BaseException | None = None

    # --- lifecycle ---

    def start(self, timeout_s: float = 10.0) -> Self:
        """Bind (in the server thread; ZMQ sockets stay in the thread that made them) and serve."""
        if self._thread is not None:
            raise RuntimeError("ShardServer already started")
        self._thread = threading.Thread(target=self._run, name=f"shard-server:{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise TimeoutError(f"shard server did not bind within {timeout_s}s")
        if self._start_error is not None:
            self._thread.join()
            raise RuntimeError(f"shard server failed to bind {self.host}:{self.port}") from self._start_error
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving and close the socket. Idempotent. Unanswered requests get no reply."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- loop ---

    def _run(self) -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, 4 * self.shard.max_frame_bytes)
        try:
            sock.bind(f"tcp://{self.host}:{self.port or '*'}")
            self.address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except Exception as err:
            log.exception("shard server: bind failed")
            self._start_error = err
            sock.close(linger=0)
            ctx.term()
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(_POLL_MS):
                    continue
                # Drain everything that is ready before polling again.
                while not self._stop.is_set():
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        self._serve_one(sock, frames)
                    except Exception:
                        log.exception("shard server: request dropped")
        finally:
            sock.close(linger=0)
            ctx.term()

    def _serve_one(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        identity, rest = frames[0], frames[1:]
        if len(rest) == 3:
            op, req_id, body = rest
            try:
                reply = self.handle(op, body)
            except Exception as err:  # one bad request must never stop the shard
                log.exception("shard server: error handling op %r", op[:32])
                reply = _error("internal", f"{type(err).__name__}: {err}")
        else:
            req_id = rest[1] if len(rest) >= 2 and len(rest[1]) == 8 else NO_REQ_ID
            reply = _error("bad_request", f"expected 3 frames [op, req_id, body], got {len(rest)}")
        try:
            sock.send_multipart([identity, req_id, _pack(reply)], zmq.NOBLOCK)
        except zmq.ZMQError as err:
            # The peer is gone or its queue is full: drop this reply, keep serving.
            log.warning("shard server: reply dropped (%s)", err)

    def handle(self, op: bytes, body: bytes) -> dict[str, Any]:
        """One request -> reply map. Public so it can be exercised without sockets."""
        if op == b"insert":
            with self.lock:
                return self.shard.insert(body)
        if op == b"sample":
            return self._sample(body)
        return _error("bad_request", f"unknown op {op[:32]!r} (expected b'insert' or b'sample')")

    def _sample(self, body: bytes) -> dict[str, Any]:
        try:
            req = msgpack.unpackb(body, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as err:
            return _error("bad_request", f"sample body is not msgpack ({type(err).__name__})")
        n = req.get("n") if isinstance(req, dict) else None
        if type(n) is not int or not 1 <= n <= MAX_SAMPLE_N:
            return _error(
                "bad_request",
                f"sample needs {{'n': int in 1..{MAX_SAMPLE_N}}}, got {req!r:.100}",
            )
        with self.lock:
            items = self.shard.sample(n, self._rng)
        if not items:
            return {"status": "empty", "items": []}
        return {"status": "ok", "items": items}
