"""Request and reply bodies of the shard protocol (the ops other than insert, whose body is a
trajectory frame): parsing on the server side, building on the client side.

Arrays travel as raw little-endian bytes (keys int64, priorities float64), like the wire schema.
Parsers return the parsed request, or an error reply map (it has an "error" key) to send back.

Not guaranteed: parsers check shape and type, not meaning (e.g. a key of an evicted step parses
fine; the shard reports it as stale).
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

NO_REQ_ID = bytes(8)
MAX_SAMPLE_N = 8192  # one reply holds all items; this keeps a typo from building a huge one
MAX_GET = 4096
I64 = np.dtype("<i8")
F64 = np.dtype("<f8")


def error_reply(code: str, detail: str) -> dict[str, Any]:
    return {"status": "error", "error": code, "detail": detail}


def _unpack_map(body: bytes, what: str, empty_ok: bool = False) -> dict | dict[str, Any]:
    if empty_ok and body == b"":
        return {}
    try:
        req = msgpack.unpackb(body, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        return error_reply("bad_request", f"{what} body is not msgpack ({type(err).__name__})")
    if not isinstance(req, dict):
        return error_reply("bad_request", f"{what} body must be a map, got {type(req).__name__}")
    return req


def _optional_int(req: dict, key: str) -> tuple[int | None, bool]:
    v = req.get(key)
    if v is None:
        return None, True
    return v, type(v) is int and v >= 0


def parse_sample(body: bytes, need_n: bool = True) -> dict[str, Any]:
    """{"n": int in 1..MAX_SAMPLE_N, "policy_version": int >= 0?, "timeout_ms": int >= 0?}"""
    req = _unpack_map(body, "sample", empty_ok=not need_n)
    if req.get("status") == "error":
        return req
    n = req.get("n")
    if need_n and (type(n) is not int or not 1 <= n <= MAX_SAMPLE_N):
        return error_reply("bad_request", f"sample needs {{'n': int in 1..{MAX_SAMPLE_N}}}, got {req!r:.100}")
    version, ok_v = _optional_int(req, "policy_version")
    timeout_ms, ok_t = _optional_int(req, "timeout_ms")
    if not (ok_v and ok_t):
        return error_reply("bad_request", f"policy_version and timeout_ms must be ints >= 0, got {req!r:.100}")
    return {
        "n": n,
        "policy_version": version,
        "timeout_s": None if timeout_ms is None else timeout_ms / 1000.0,
    }


def parse_update(body: bytes) -> dict[str, Any]:
    """{"keys": int64 LE bytes, "priorities": float64 LE bytes} of one length; priorities finite
    and >= 0. Lists of ints / floats are accepted too."""
    req = _unpack_map(body, "update_priorities")
    if req.get("status") == "error":
        return req
    try:
        keys = _array(req.get("keys"), I64)
        prios = _array(req.get("priorities"), F64)
    except (TypeError, ValueError) as err:
        return error_reply("bad_request", f"update_priorities: {err}")
    if len(keys) != len(prios):
        return error_reply("bad_request", f"update_priorities: {len(keys)} keys for {len(prios)} priorities")
    if not np.isfinite(prios).all() or (prios < 0).any():
        return error_reply("bad_request", "update_priorities: priorities must be finite and >= 0")
    return {"keys": keys, "priorities": prios}


def _array(raw: Any, dtype: np.dtype) -> np.ndarray:
    if isinstance(raw, bytes):
        if len(raw) % dtype.itemsize:
            raise ValueError(f"{len(raw)} bytes is not a multiple of {dtype.itemsize}")
        return np.frombuffer(raw, dtype)
    if isinstance(raw, list):
        kind = int if dtype == I64 else (int, float)
        if not all(isinstance(v, kind) and not isinstance(v, bool) for v in raw):
            raise TypeError(f"expected a list of {dtype} values")
        return np.asarray(raw, dtype=dtype)
    raise TypeError(f"expected bytes or a list, got {type(raw).__name__}")


def parse_get(body: bytes) -> dict[str, Any]:
    req = _unpack_map(body, "get")
    if req.get("status") == "error":
        return req
    ids = req.get("traj_ids")
    if not isinstance(ids, list) or len(ids) > MAX_GET or not all(isinstance(t, str) for t in ids):
        return error_reply("bad_request", f"get needs {{'traj_ids': [str, …]}} (at most {MAX_GET})")
    return {"traj_ids": ids}


def sample_reply(shard: Any, items: Any) -> dict[str, Any]:
    """The sample reply of `shard.sample(...)`'s result: items with key, probability and priority
    added, and the shard's info (mass, min_a, size, version) for a sharded client."""
    status = getattr(items, "status", "ok" if items else "empty")
    if items:
        keys = getattr(items, "keys", np.zeros(0))
        probs = getattr(items, "probabilities", np.zeros(0))
        prios = getattr(items, "priorities", np.zeros(0))
        if len(keys) == len(items):
            for it, k, p, q in zip(items, keys.tolist(), probs.tolist(), prios.tolist()):
                it["key"], it["probability"], it["priority"] = k, p, q
    reply = dict(shard.info(), status=status, items=list(items))
    reply["beta"] = shard.config.beta
    if status == "retry":
        reply["detail"] = "rate_limited"
    return reply


def pack(m: dict[str, Any]) -> bytes:
    return msgpack.packb(m, use_bin_type=True)
