"""ShardServer: a ZMQ ROUTER in a background thread, serving one ReplayShard.

Protocol: a DEALER sends [op, req_id, body] and gets [req_id, body_msgpack] back. Ops (bodies are
msgpack maps unless said otherwise; see buffer/net/protocol.py):
  b"insert"             body = trajectory frame            -> insert reply (shard.insert)
  b"sample"             {"n", "policy_version"?, "timeout_ms"?} -> {"status": "ok"|"empty"|"retry", "items", …}
  b"sample_groups"      {"n", "policy_version"?, "timeout_ms"?} -> {"status", "groups", …}
  b"update_priorities"  {"keys": <int64 LE>, "priorities": <float64 LE>} -> {"status", "updated", "stale"}
  b"info"               {"policy_version"?}                  -> mass, min_a, size, version
  b"get"                {"traj_ids": [...]}                  -> {"frames": {id: frame}, "priorities": {id: <f8>}}
  b"stats"              {}                                   -> shard.stats() (monitoring without Ray)
  b"snapshot"           {}                                   -> {"status": "ok", "started": bool}
Every request gets exactly one reply; a malformed request or an exception while handling it
becomes {"status": "error", ...} and the server keeps serving.

Each loop pass drains up to `max_batch` ready requests and handles them; with a durable shard the
replies wait until the log writer thread (buffer/durability/log_writer.py) has written and fsync'd the log up
to the end of their batch, while the loop goes on with the next batch: an acknowledged insert is
durable.
Requests the rate limiter blocks wait in the server (inserts in arrival order) until the other
side moves or their timeout passes; then they are answered "retry".

Not guaranteed:
- Replies to messages with the wrong frame count carry the second frame as req_id when it is
  8 bytes long, else 8 zero bytes (clients start their counters at 1, so 0 matches nothing).
- Frames larger than 4 x max_frame_bytes are dropped by ZMQ itself (MAXMSGSIZE) and the
  sender's connection is reset without a reply; frames between the limit and that get an
  "oversized" reply.
- A reply to a client that has gone away is silently dropped (ROUTER semantics); so are the
  replies of requests still waiting when the server stops.
- gc.freeze (see `gc_freeze_every`) acts on the whole process: objects in reference cycles that
  were alive at a freeze are never collected afterwards (the shard's own objects have none).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from typing import Any, Self

import msgpack
import numpy as np
import zmq

from buffer.core.shard import ReplayShard
from buffer.net.protocol import (
    MAX_SAMPLE_N,
    NO_REQ_ID,
    error_reply,
    parse_get,
    parse_sample,
    parse_update,
    sample_reply,
)
from buffer.net.zmqio import NOBLOCK, recv_frames, send_frames
from buffer.wire.schema import encode

log = logging.getLogger(__name__)

__all__ = ["MAX_SAMPLE_N", "NO_REQ_ID", "ShardServer"]

_POLL_MS = 50  # how long stop() may wait for the loop to notice
_WAITING_OPS = (b"insert", b"sample", b"sample_groups")


_pack = msgpack.Packer(use_bin_type=True).pack  # one Packer: packb builds a new one per call


class ShardServer:
    def __init__(
        self,
        shard: ReplayShard,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        lock: threading.Lock | None = None,
        seed: int | None = None,
        max_batch: int = 256,
        gc_freeze_every: int | None = 1000,
    ):
        """port=0 picks a free port; `address` is known once start() returns.

        `lock` guards every call into `shard`; share it to read the shard from other threads.
        `gc_freeze_every`: after this many stored trajectories, move every live object into the
        interpreter's permanent GC generation (gc.freeze): stored trajectories live long and
        have no reference cycles, and without this each full collection walks all of them
        (inserts got ~1.5x slower at 20k stored). None leaves the collector alone.
        """
        if host in ("0.0.0.0", "*", ""):
            raise ValueError("bind to the node's address, never to all interfaces")
        self.shard = shard
        self.host, self.port = host, port
        self.lock = lock or threading.Lock()
        self.max_batch = max_batch
        self.gc_freeze_every = gc_freeze_every
        self._frozen_at = 0
        self.address: str | None = None
        self._rng = np.random.default_rng(seed)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_error: BaseException | None = None
        self._waiting_inserts: deque[tuple[float, bytes, bytes, bytes]] = deque()
        self._waiting_samples: list[tuple[float, bytes, bytes, bytes, bytes]] = []

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
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        durability = self.shard.durability
        writer = durability.writer if durability is not None else None
        if writer is not None:
            poller.register(writer.wake_fd, zmq.POLLIN)
        awaiting: deque[tuple[int, list[list[bytes]]]] = deque()  # (log position, replies)
        self._ready.set()
        try:
            while not self._stop.is_set():
                ready = poller.poll(self._poll_ms())
                if writer is not None and any(r is not sock for r, _ in ready):
                    writer.drain_wakeups()
                out: list[list[bytes]] = []
                for _ in range(self.max_batch):  # drain what is ready, up to one batch
                    try:
                        frames = recv_frames(sock)
                    except zmq.Again:
                        break
                    try:
                        self._serve_one(frames, out)
                    except Exception:
                        log.exception("shard server: request dropped")
                if self._waiting_inserts or self._waiting_samples:
                    self._after_batch(out)
                if writer is None:
                    self._send(sock, out)
                else:
                    # Replies go out once the log is durable up to where their batch ended.
                    writer.kick()
                    if out:
                        awaiting.append((writer.enqueued, out))
                    while awaiting and awaiting[0][0] <= writer.durable:
                        self._send(sock, awaiting.popleft()[1])
                    with self.lock:
                        self.shard.maybe_snapshot()
                self._maybe_freeze()
        finally:
            if writer is not None:
                try:
                    writer.wait_durable(timeout_s=30)
                    while awaiting:
                        self._send(sock, awaiting.popleft()[1])
                except (OSError, TimeoutError):
                    log.exception("shard server: log not durable at stop; unsynced replies dropped")
            sock.close(linger=0)
            ctx.term()

    def _maybe_freeze(self) -> None:
        stored = self.shard.counters["stored"]
        if self.gc_freeze_every is not None and stored - self._frozen_at >= self.gc_freeze_every:
            gc.freeze()
            self._frozen_at = stored

    @staticmethod
    def _send(sock: zmq.Socket, out: list[list[bytes]]) -> None:
        for msg in out:
            try:
                send_frames(sock, msg, NOBLOCK)
            except zmq.ZMQError as err:
                # The peer is gone or its queue is full: drop this reply, keep serving.
                log.warning("shard server: reply dropped (%s)", err)

    def _poll_ms(self) -> int:
        deadlines = [w[0] for w in self._waiting_samples]
        if self._waiting_inserts:
            deadlines.append(self._waiting_inserts[0][0])
        if not deadlines:
            return _POLL_MS
        return max(0, min(_POLL_MS, int((min(deadlines) - time.monotonic()) * 1000) + 1))

    def _serve_one(self, frames: list[bytes], out: list[list[bytes]]) -> None:
        identity, rest = frames[0], frames[1:]
        if len(rest) != 3:
            req_id = rest[1] if len(rest) >= 2 and len(rest[1]) == 8 else NO_REQ_ID
            reply = error_reply("bad_request", f"expected 3 frames [op, req_id, body], got {len(rest)}")
            out.append([identity, req_id, _pack(reply)])
            return
        op, req_id, body = rest
        if op == b"insert":
            if self._waiting_inserts:  # keep arrival order behind waiting inserts
                self._wait_insert(identity, req_id, body)
                return
            try:
                with self.lock:
                    reply = self.shard.insert(body, sync=False)
            except Exception as err:  # one bad request must never stop the shard
                log.exception("shard server: error handling an insert")
                reply = error_reply("internal", f"{type(err).__name__}: {err}")
            if reply["status"] == "retry":
                self._wait_insert(identity, req_id, body)
            else:
                out.append([identity, req_id, _pack(reply)])
            return
        reply = self._handle_safely(op, body)
        if reply.get("status") == "retry" and op in _WAITING_OPS:
            if op == b"insert":
                self._wait_insert(identity, req_id, body)
                return
            wait_s = reply.pop("_wait_s", 0.0)
            if wait_s > 0:
                self._waiting_samples.append((time.monotonic() + wait_s, identity, req_id, op, body))
                return
        reply.pop("_wait_s", None)
        out.append([identity, req_id, _pack(reply)])

    def _wait_insert(self, identity: bytes, req_id: bytes, body: bytes) -> None:
        deadline = time.monotonic() + self.shard.config.insert_timeout_s
        self._waiting_inserts.append((deadline, identity, req_id, body))

    def _after_batch(self, out: list[list[bytes]]) -> None:
        """Retry waiting requests until nothing moves; answer the expired ones "retry"."""
        progress = True
        while progress and (self._waiting_inserts or self._waiting_samples):
            progress = False
            while self._waiting_inserts:
                _, identity, req_id, body = self._waiting_inserts[0]
                reply = self._handle_safely(b"insert", body)
                if reply.get("status") == "retry":
                    break
                self._waiting_inserts.popleft()
                out.append([identity, req_id, _pack(reply)])
                progress = True
            still = []
            for item in self._waiting_samples:
                _, identity, req_id, op, body = item
                reply = self._handle_safely(op, body)
                if reply.get("status") == "retry":
                    still.append(item)
                else:
                    reply.pop("_wait_s", None)
                    out.append([identity, req_id, _pack(reply)])
                    progress = True
            self._waiting_samples = still
        now = time.monotonic()
        retry = {"status": "retry", "error": None, "detail": "rate_limited"}
        while self._waiting_inserts and self._waiting_inserts[0][0] <= now:
            _, identity, req_id, body = self._waiting_inserts.popleft()
            out.append([identity, req_id, _pack(dict(retry, traj_id=None))])
        keep = []
        for item in self._waiting_samples:
            if item[0] <= now:
                out.append([item[1], item[2], _pack(retry)])
            else:
                keep.append(item)
        self._waiting_samples = keep

    # --- requests ---

    def _handle_safely(self, op: bytes, body: bytes) -> dict[str, Any]:
        try:
            return self._handle_now(op, body)
        except Exception as err:  # one bad request must never stop the shard
            log.exception("shard server: error handling op %r", op[:32])
            return error_reply("internal", f"{type(err).__name__}: {err}")

    def handle(self, op: bytes, body: bytes) -> dict[str, Any]:
        """One request -> reply map, committed. Public so it can be exercised without sockets.
        A request the rate limiter blocks is answered "retry" at once (no waiting here)."""
        reply = self._handle_now(op, body)
        reply.pop("_wait_s", None)
        with self.lock:
            self.shard.commit()
        return reply

    def _handle_now(self, op: bytes, body: bytes) -> dict[str, Any]:
        if op == b"insert":
            with self.lock:
                return self.shard.insert(body, sync=False)
        if op in (b"sample", b"sample_groups"):
            req = parse_sample(body)
            if "error" in req:
                return req
            with self.lock:
                if req["policy_version"] is not None:
                    self.shard.set_policy_version(req["policy_version"])
                if op == b"sample":
                    reply = sample_reply(self.shard, self.shard.sample(req["n"], self._rng))
                else:
                    status, groups = self.shard.sample_groups(req["n"], self._rng)
                    reply = dict(self.shard.info(), status=status, groups=groups, beta=self.shard.config.beta)
            wait_s = req["timeout_s"] if req["timeout_s"] is not None else self.shard.config.sample_timeout_s
            reply["_wait_s"] = wait_s
            return reply
        if op == b"update_priorities":
            req = parse_update(body)
            if "error" in req:
                return req
            with self.lock:
                return self.shard.update_priorities(req["keys"], req["priorities"], sync=False)
        if op == b"info":
            req = parse_sample(body, need_n=False)
            if "error" in req:
                return req
            with self.lock:
                if req["policy_version"] is not None:
                    self.shard.set_policy_version(req["policy_version"])
                return dict(self.shard.info(), status="ok")
        if op == b"get":
            req = parse_get(body)
            if "error" in req:
                return req
            with self.lock:
                found = {t: self.shard.get(t) for t in req["traj_ids"]}
                prios = {t: self.shard.priorities_of(t) for t in req["traj_ids"]}
            return {
                "status": "ok",
                "frames": {t: encode(tr) for t, tr in found.items() if tr is not None},
                "priorities": {t: p.astype("<f8").tobytes() for t, p in prios.items() if p is not None},
            }
        if op == b"stats":
            with self.lock:
                return dict(self.shard.stats(), status="ok")
        if op == b"snapshot":
            with self.lock:
                return {"status": "ok", "started": self.shard.maybe_snapshot(force=True)}
        return error_reply("bad_request", f"unknown op {op[:32]!r} (expected one of {sorted(OPS)})")


OPS = {"insert", "sample", "sample_groups", "update_priorities", "info", "get", "stats", "snapshot"}
