"""The gate every frame from the network goes through: `decode` returns a fully validated
`Trajectory` (buffer/schema.py) or raises `WireError(code, detail)` naming the field.

A fast path takes frames whose every field already has its exact expected type and shape (what
`encode` writes); anything else goes through the field-by-field reader, which names what is wrong.

Not guaranteed: arrays in the returned Trajectory are read-only views of the frame's bytes (copy
them to keep them past the frame); unknown keys are ignored.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

from buffer.schema import (
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


def _fast_step(raw: Any) -> Step | None:
    """The common case, a valid step, checked with as few calls as possible; None when anything
    is off (the caller then runs `_decode_step`, which names the error). Logprob finiteness is
    checked once per trajectory by the caller."""
    if type(raw) is not dict:
        return None
    try:
        obs, act, allowed = raw["observation"], raw["action"], raw["allowed_actions"]
        p, r, lp = raw["prompt_ids"], raw["response_ids"], raw["logprobs"]
        reward, done, version = raw["reward"], raw["done"], raw["policy_version"]
    except KeyError:
        return None
    shot, constraint = raw.get("screenshot_hash"), raw.get("constraint")
    if (
        type(obs) is not str
        or type(act) is not str
        or type(p) is not bytes
        or type(r) is not bytes
        or type(lp) is not bytes
        or len(p) % 4
        or len(r) % 4
        or len(lp) != len(r)
        or type(done) is not bool
        or type(version) is not int
        or type(allowed) is not list
        or (shot is not None and type(shot) is not str)
        or (constraint is not None and type(constraint) is not str)
    ):
        return None
    for a in allowed:
        if type(a) is not str:
            return None
    if type(reward) is int:
        reward = float(reward)
    elif type(reward) is not float or not math.isfinite(reward):
        return None
    return Step(
        obs,
        np.frombuffer(p, INT32),
        np.frombuffer(r, INT32),
        np.frombuffer(lp, FLOAT32),
        act,
        allowed,
        reward,
        done,
        version,
        shot,
        constraint,
    )


def _decode_steps(raw_steps: list) -> list[Step]:
    steps = []
    for raw in raw_steps:
        step = _fast_step(raw)
        if step is None:
            break
        steps.append(step)
    else:
        lp = b"".join(raw["logprobs"] for raw in raw_steps)
        if np.isfinite(np.frombuffer(lp, FLOAT32)).all():
            return steps
    # Something is wrong somewhere: the careful path finds it and names it.
    return [_decode_step(s, i) for i, s in enumerate(raw_steps)]


_TOP_STR = ("traj_id", "task_id", "group_id", "actor_id", "env", "outcome")


def _fast_map(m: dict) -> Trajectory | None:
    """A valid trajectory with as few calls as possible; None if anything is off (`_decode_map` names it)."""
    try:
        schema, raw_steps = m["schema"], m["steps"]
        traj_id, task_id, group_id, actor_id, env, outcome = (m[k] for k in _TOP_STR)
        seed, version, reward, success, created = m["seed"], m["policy_version"], m["reward"], m["success"], m["created_at"]
    except KeyError:
        return None
    if (
        type(schema) is not int
        or schema != SCHEMA_VERSION
        or type(raw_steps) is not list
        or not raw_steps
        or {type(traj_id), type(task_id), type(group_id), type(actor_id), type(env)} != {str}
        or outcome not in OUTCOMES
        or {type(seed), type(version)} != {int}
        or type(success) is not bool
        or type(reward) not in (int, float)
        or type(created) not in (int, float)
        or not (math.isfinite(reward) and math.isfinite(created))
    ):
        return None
    grammar = m.get("grammar")
    if grammar is not None and (type(grammar) is not str or len(grammar) > MAX_GRAMMAR_CHARS):
        return None
    steps = _decode_steps(raw_steps)
    return Trajectory(traj_id, task_id, group_id, actor_id, env, seed, version, steps, float(reward), success, outcome,
                      float(created), grammar)


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
        steps=_decode_steps(raw_steps),
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
    try:
        m = msgpack.unpackb(frame, raw=False, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        raise WireError("bad_msgpack", f"frame ({type(err).__name__}: {err})") from None
    if not isinstance(m, dict):
        raise WireError("not_a_map", f"frame (top level is {type(m).__name__})")
    traj_id = m.get("traj_id")
    try:
        return _fast_map(m) or _decode_map(m)
    except WireError as err:
        err.traj_id = traj_id if isinstance(traj_id, str) else None
        raise
