"""Wire schema v1: one trajectory = one msgpack map.

Token ids (int32) and logprobs (float32) travel as raw little-endian bytes, never as lists, and
nothing on the wire is pickled. `decode` is the gate every frame from the network goes through: it
either returns a fully validated `Trajectory` or raises `WireError(code, detail)`.

Not guaranteed:
- `encode` does not validate values (NaN rewards, bad outcomes, empty steps all encode fine);
  the receiving `decode` rejects them. It only refuses arrays that cannot be represented.
- Unknown keys in a frame are ignored and are not preserved by a decode/encode round trip.
- Arrays returned by `decode` are read-only views of the frame's bytes.
- `screenshot_hash` and `constraint` are optional per step: a frame without one decodes to None,
  and `encode` leaves the key out when it is None, so frames of writers that never set them are
  byte-identical to the frames written before the fields existed (still schema v1).
- `grammar` is the same kind of optional field, per trajectory: the EBNF text the actor's engine
  decoded every step under when its constraint was a grammar (the learner recompiles it to score
  the same masked distribution). At most MAX_GRAMMAR_CHARS characters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

SCHEMA_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024
MAX_GRAMMAR_CHARS = 64 * 1024
OUTCOMES = ("correct", "incorrect", "unknown")
ERROR_CODES = (
    "bad_msgpack",
    "not_a_map",
    "unknown_schema",
    "missing_field",
    "wrong_type",
    "bad_array",
    "length_mismatch",
    "nan",
    "oversized",
)
INT32 = np.dtype("<i4")
FLOAT32 = np.dtype("<f4")


class WireError(ValueError):
    """A frame that is not a valid v1 trajectory. `str(err)` is "<code>: <field> (<why>)".

    `traj_id` is the frame's traj_id when it could be read, so a reply can still name it.
    """

    def __init__(self, code: str, detail: str, traj_id: str | None = None):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown WireError code {code!r}")
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.traj_id = traj_id


@dataclass(eq=False)
class Step:
    observation: str
    prompt_ids: np.ndarray  # int32, 1-D
    response_ids: np.ndarray  # int32, 1-D
    logprobs: np.ndarray  # float32, 1-D, one per response token
    action: str
    allowed_actions: list[str] = field(default_factory=list)
    reward: float = 0.0
    done: bool = False
    policy_version: int = 0
    screenshot_hash: str | None = None  # of the screenshot this step acted on; optional
    constraint: str | None = None  # what decoding was constrained by: choice | grammar | none; optional


@dataclass(eq=False)
class Trajectory:
    traj_id: str
    task_id: str
    group_id: str
    actor_id: str
    env: str
    seed: int
    policy_version: int  # version when the episode started; each step has its own too
    steps: list[Step]
    reward: float  # the return
    success: bool
    outcome: str  # one of OUTCOMES
    created_at: float  # unix seconds
    grammar: str | None = None  # EBNF the steps with constraint "grammar" were decoded under; optional

    @property
    def num_steps(self) -> int:
        return len(self.steps)


# --- arrays ---


def array_to_bytes(values: Any, dtype: np.dtype, name: str) -> bytes:
    """1-D ints or floats -> raw little-endian bytes; refuses values that would not survive."""
    if type(values) is np.ndarray and values.dtype == dtype and values.ndim == 1:
        return values.tobytes()  # already the wire dtype: nothing to check or convert
    arr = np.asarray(values)
    if arr.size == 0:
        return b""
    if arr.ndim != 1:
        raise WireError("bad_array", f"{name} (expected 1-D, got shape {arr.shape})")
    if dtype == INT32:
        if arr.dtype.kind not in "iu":
            raise WireError("wrong_type", f"{name} (expected integers, got {arr.dtype})")
        info = np.iinfo(np.int32)
        if arr.min() < info.min or arr.max() > info.max:
            raise WireError("bad_array", f"{name} (values outside int32)")
    elif arr.dtype.kind not in "fiu":
        raise WireError("wrong_type", f"{name} (expected floats, got {arr.dtype})")
    return arr.astype(dtype, copy=False).tobytes()


def bytes_to_array(raw: Any, dtype: np.dtype, name: str) -> np.ndarray:
    if not isinstance(raw, bytes):
        raise WireError("wrong_type", f"{name} (expected bytes, got {type(raw).__name__})")
    if len(raw) % dtype.itemsize:
        raise WireError(
            "bad_array",
            f"{name} ({len(raw)} bytes is not a multiple of {dtype.itemsize})",
        )
    return np.frombuffer(raw, dtype=dtype)


# --- encode ---


def _step_to_map(step: Step, i: int) -> dict[str, Any]:
    path = f"steps[{i}]"
    m = {
        "observation": step.observation,
        "prompt_ids": array_to_bytes(step.prompt_ids, INT32, f"{path}.prompt_ids"),
        "response_ids": array_to_bytes(step.response_ids, INT32, f"{path}.response_ids"),
        "logprobs": array_to_bytes(step.logprobs, FLOAT32, f"{path}.logprobs"),
        "action": step.action,
        "allowed_actions": list(step.allowed_actions),
        "reward": float(step.reward),
        "done": bool(step.done),
        "policy_version": int(step.policy_version),
    }
    if step.screenshot_hash is not None:
        m["screenshot_hash"] = str(step.screenshot_hash)
    if step.constraint is not None:
        m["constraint"] = str(step.constraint)
    return m


def encode(traj: Trajectory) -> bytes:
    """Trajectory -> one msgpack frame (schema v1)."""
    m = {
        "schema": SCHEMA_VERSION,
        "traj_id": traj.traj_id,
        "task_id": traj.task_id,
        "group_id": traj.group_id,
        "actor_id": traj.actor_id,
        "env": traj.env,
        "seed": int(traj.seed),
        "policy_version": int(traj.policy_version),
        "steps": [_step_to_map(s, i) for i, s in enumerate(traj.steps)],
        "reward": float(traj.reward),
        "success": bool(traj.success),
        "outcome": traj.outcome,
        "created_at": float(traj.created_at),
    }
    if traj.grammar is not None:
        m["grammar"] = str(traj.grammar)
    return msgpack.packb(m, use_bin_type=True)


# --- decode ---


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
