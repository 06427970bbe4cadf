"""The gate every frame from the network goes through: `decode` returns a fully validated
`Trajectory` (buffer/wire/schema.py) or raises `WireError(code, detail)` naming the field.

Two paths: msgspec reads a well-formed frame into typed structs in C (the hot path: every
insert), then the value checks msgspec does not make follow (finite floats, array lengths, the
schema version, the outcome); a frame that fails any of that goes through the careful
field-by-field reader, which names what is wrong (msgspec's own messages are not the wire's
error codes). Both refuse the same frames, with one exception below.

Not guaranteed:
- Arrays in the returned Trajectory are read-only.
- Unknown keys are ignored, and the fast path skips their values unread: a string there that is
  not valid UTF-8 passes (the careful path, reading the whole map, would say bad_msgpack).
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import msgspec
import numpy as np

from buffer.wire.schema import (
    DEFAULT_MAX_FRAME_BYTES,
    FLOAT32,
    INT32,
    MAX_GRAMMAR_CHARS,
    OUTCOMES,
    SCHEMA_VERSION,
    Step,
    Trajectory,
    WireError,
    bytes_to_array,
)

# --- the fast path ---


class _WireStep(msgspec.Struct, gc=False):
    observation: str
    prompt_ids: bytes
    response_ids: bytes
    logprobs: bytes
    action: str
    allowed_actions: list[str]
    reward: float
    done: bool
    policy_version: int
    screenshot_hash: str | None = None
    constraint: str | None = None


class _WireTrajectory(msgspec.Struct, gc=False):
    schema: int
    traj_id: str
    task_id: str
    group_id: str
    actor_id: str
    env: str
    seed: int
    policy_version: int
    steps: list[_WireStep]
    reward: float
    success: bool
    outcome: str
    created_at: float
    grammar: str | None = None


_wire_decoder = msgspec.msgpack.Decoder(_WireTrajectory)
# What msgspec raises on a frame it will not read (OverflowError: an int beyond 64 bits).
_FAST_PATH_MISSES = (msgspec.DecodeError, OverflowError, ValueError, RecursionError)


def _fast_decode(frame: bytes) -> Trajectory | None:
    """The frame as a Trajectory when it is valid, else None (the careful path names why)."""
    try:
        w = _wire_decoder.decode(frame)
    except _FAST_PATH_MISSES:
        return None
    wire_steps = w.steps
    if (
        w.schema != SCHEMA_VERSION
        or not wire_steps
        or w.outcome not in OUTCOMES
        or not (math.isfinite(w.reward) and math.isfinite(w.created_at))
        or (w.grammar is not None and len(w.grammar) > MAX_GRAMMAR_CHARS)
    ):
        return None
    steps = []
    for s in wire_steps:
        p, r, lp = s.prompt_ids, s.response_ids, s.logprobs
        if len(p) % 4 or len(r) % 4 or len(lp) != len(r) or not math.isfinite(s.reward):
            return None
        steps.append(
            Step(
                s.observation,
                np.frombuffer(p, INT32),
                np.frombuffer(r, INT32),
                np.frombuffer(lp, FLOAT32),
                s.action,
                s.allowed_actions,
                s.reward,
                s.done,
                s.policy_version,
                s.screenshot_hash,
                s.constraint,
            )
        )
    if not np.isfinite(np.frombuffer(b"".join(s.logprobs for s in wire_steps), FLOAT32)).all():
        return None
    return Trajectory(
        w.traj_id,
        w.task_id,
        w.group_id,
        w.actor_id,
        w.env,
        w.seed,
        w.policy_version,
        steps,
        w.reward,
        w.success,
        w.outcome,
        w.created_at,
        w.grammar,
    )


# --- the careful path ---


class _Reader:
    """Typed field access on one msgpack map; every error names the field's full path."""

    def __init__(self, m: dict, prefix: str = ""):
        self.m, self.prefix = m, prefix

    def get(self, key: str) -> Any:
        if key not in self.m:
            raise WireError("missing_field", self.prefix + key)
        return self.m[key]

    def wrong(self, key: str, expected: str, value: Any) -> WireError:
        got = type(value).__name__
        return WireError("wrong_type", f"{self.prefix}{key} (expected {expected}, got {got})")

    def string(self, key: str) -> str:
        v = self.get(key)
        if not isinstance(v, str):
            raise self.wrong(key, "str", v)
        return v

    def integer(self, key: str) -> int:
        v = self.get(key)
        if isinstance(v, bool) or not isinstance(v, int):  # bool is an int subclass
            raise self.wrong(key, "int", v)
        return v

    def boolean(self, key: str) -> bool:
        v = self.get(key)
        if not isinstance(v, bool):
            raise self.wrong(key, "bool", v)
        return v

    def real(self, key: str) -> float:
        """Finite float; an int is accepted and widened (msgpack packs 0 and 0.0 differently)."""
        v = self.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.wrong(key, "float", v)
        v = float(v)
        if not math.isfinite(v):
            raise WireError("nan", f"{self.prefix}{key} (not finite: {v})")
        return v

    def optional_string(self, key: str) -> str | None:
        v = self.m.get(key)
        if v is not None and not isinstance(v, str):
            raise self.wrong(key, "str or nil", v)
        return v

    def grammar(self) -> str | None:
        v = self.optional_string("grammar")
        if v is not None and len(v) > MAX_GRAMMAR_CHARS:
            raise WireError("oversized", f"{self.prefix}grammar ({len(v)} characters > limit {MAX_GRAMMAR_CHARS})")
        return v

    def strings(self, key: str) -> list[str]:
        v = self.get(key)
        if not isinstance(v, list):
            raise self.wrong(key, "list", v)
        for j, s in enumerate(v):
            if not isinstance(s, str):
                raise self.wrong(f"{key}[{j}]", "str", s)
        return v

    def array(self, key: str, dtype: np.dtype) -> np.ndarray:
        return bytes_to_array(self.get(key), dtype, self.prefix + key)


def _decode_step(raw: Any, i: int) -> Step:
    path = f"steps[{i}]"
    if not isinstance(raw, dict):
        raise WireError("wrong_type", f"{path} (expected map, got {type(raw).__name__})")
    r = _Reader(raw, path + ".")
    step = Step(
        observation=r.string("observation"),
        prompt_ids=r.array("prompt_ids", INT32),
        response_ids=r.array("response_ids", INT32),
        logprobs=r.array("logprobs", FLOAT32),
        action=r.string("action"),
        allowed_actions=r.strings("allowed_actions"),
        reward=r.real("reward"),
        done=r.boolean("done"),
        policy_version=r.integer("policy_version"),
        screenshot_hash=r.optional_string("screenshot_hash"),
        constraint=r.optional_string("constraint"),
    )
    n_lp, n_ids = len(step.logprobs), len(step.response_ids)
    if n_lp != n_ids:
        raise WireError(
            "length_mismatch",
            f"{path}.logprobs ({n_lp} values for {n_ids} response ids)",
        )
    if not np.isfinite(step.logprobs).all():
        raise WireError("nan", f"{path}.logprobs (not all finite)")
    return step


def _decode_map(m: dict) -> Trajectory:
    r = _Reader(m)
    schema = r.get("schema")
    if type(schema) is not int or schema != SCHEMA_VERSION:
        raise WireError("unknown_schema", f"schema ({schema!r}, this side speaks {SCHEMA_VERSION})")
    raw_steps = r.get("steps")
    if not isinstance(raw_steps, list):
        raise r.wrong("steps", "list", raw_steps)
    if not raw_steps:
        raise WireError("missing_field", "steps[0] (a trajectory needs at least one step)")
    outcome = r.string("outcome")
    if outcome not in OUTCOMES:
        raise WireError("wrong_type", f"outcome (expected one of {OUTCOMES}, got {outcome!r})")
    return Trajectory(
        traj_id=r.string("traj_id"),
        task_id=r.string("task_id"),
        group_id=r.string("group_id"),
        actor_id=r.string("actor_id"),
        env=r.string("env"),
        seed=r.integer("seed"),
        policy_version=r.integer("policy_version"),
        steps=[_decode_step(s, i) for i, s in enumerate(raw_steps)],
        reward=r.real("reward"),
        success=r.boolean("success"),
        outcome=outcome,
        created_at=r.real("created_at"),
        grammar=r.grammar(),
    )


def decode(frame: bytes, max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Trajectory:
    """One msgpack frame -> validated Trajectory, or WireError. The size is checked first."""
    if len(frame) > max_bytes:
        raise WireError("oversized", f"frame ({len(frame)} bytes > limit {max_bytes})")
    traj = _fast_decode(frame)
    if traj is not None:
        return traj
    try:
        m = msgpack.unpackb(frame, raw=False, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        raise WireError("bad_msgpack", f"frame ({type(err).__name__}: {err})") from None
    if not isinstance(m, dict):
        raise WireError("not_a_map", f"frame (top level is {type(m).__name__})")
    traj_id = m.get("traj_id")
    try:
        return _decode_map(m)
    except WireError as err:
        err.traj_id = traj_id if isinstance(traj_id, str) else None
        raise
