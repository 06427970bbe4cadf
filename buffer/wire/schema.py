"""Wire schema v1: one trajectory = one msgpack map.

Token ids (int32) and logprobs (float32) travel as raw little-endian bytes, never as lists, and
nothing on the wire is pickled. `decode` (buffer/wire/decode.py) is the gate every frame from the
network goes through: it either returns a fully validated `Trajectory` or raises
`WireError(code, detail)`.

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
