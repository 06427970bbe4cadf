import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import buffer
from buffer.wire.decode import decode
from buffer.wire.schema import ERROR_CODES, MAX_GRAMMAR_CHARS, SCHEMA_VERSION, WireError, encode
from tests.support.trajectories import assert_same_trajectory, make_trajectory, pack, wire_map


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_round_trip(rng):
    for _ in range(20):
        traj = make_trajectory(rng)
        back = decode(encode(traj))
        assert_same_trajectory(traj, back)


def test_arrays_travel_as_little_endian_bytes(rng):
    traj = make_trajectory(rng, n_steps=1)
    step = wire_map(traj)["steps"][0]
    assert isinstance(step["prompt_ids"], bytes)
    assert step["prompt_ids"] == traj.steps[0].prompt_ids.astype("<i4").tobytes()
    assert step["logprobs"] == traj.steps[0].logprobs.astype("<f4").tobytes()


def test_encode_accepts_lists_and_other_int_dtypes(rng):
    traj = make_trajectory(rng, n_steps=1)
    traj.steps[0].prompt_ids = [1, 2, 3]
    traj.steps[0].response_ids = np.array([7, 8], dtype=np.int64)
    traj.steps[0].logprobs = [-0.5, -1.5]
    step = decode(encode(traj)).steps[0]
    assert step.prompt_ids.tolist() == [1, 2, 3]
    assert step.response_ids.dtype == np.int32 and step.response_ids.tolist() == [7, 8]
    assert step.logprobs.tolist() == [-0.5, -1.5]


def test_encode_refuses_ids_outside_int32(rng):
    traj = make_trajectory(rng, n_steps=1)
    traj.steps[0].prompt_ids = np.array([1, 1 << 40])
    with pytest.raises(WireError) as e:
        encode(traj)
    assert e.value.code == "bad_array"


def test_empty_arrays_are_valid(rng):
    traj = make_trajectory(rng, n_steps=1)
    traj.steps[0].response_ids = np.zeros(0, np.int32)
    traj.steps[0].logprobs = np.zeros(0, np.float32)
    assert len(decode(encode(traj)).steps[0].response_ids) == 0


def test_ints_are_widened_to_floats_for_float_fields(rng):
    m = wire_map(make_trajectory(rng))
    m["reward"] = 1
    assert decode(pack(m)).reward == 1.0


def _mutated(rng, mutate):
    m = wire_map(make_trajectory(rng, n_steps=2, traj_id="t-bad"))
    mutate(m)
    return pack(m)


def _set(path, value):
    def mutate(m):
        *parents, last = path
        for p in parents:
            m = m[p]
        m[last] = value

    return mutate


def _drop(path):
    def mutate(m):
        *parents, last = path
        for p in parents:
            m = m[p]
        del m[last]

    return mutate


# (case name, mutation of a valid map, expected code, text that str(err) must contain)
MAP_CASES = [
    ("schema_2", _set(["schema"], 2), "unknown_schema", "schema"),
    ("schema_str", _set(["schema"], "1"), "unknown_schema", "schema"),
    ("schema_true", _set(["schema"], True), "unknown_schema", "schema"),
    ("schema_missing", _drop(["schema"]), "missing_field", "schema"),
    ("no_traj_id", _drop(["traj_id"]), "missing_field", "traj_id"),
    (
        "no_response_ids",
        _drop(["steps", 0, "response_ids"]),
        "missing_field",
        "steps[0].response_ids",
    ),
    ("no_steps", _drop(["steps"]), "missing_field", "steps"),
    ("empty_steps", _set(["steps"], []), "missing_field", "steps[0]"),
    ("seed_bool", _set(["seed"], True), "wrong_type", "seed"),
    ("seed_float", _set(["seed"], 1.5), "wrong_type", "seed"),
    ("done_int", _set(["steps", 1, "done"], 1), "wrong_type", "steps[1].done"),
    ("success_none", _set(["success"], None), "wrong_type", "success"),
    ("reward_str", _set(["reward"], "1.0"), "wrong_type", "reward"),
    (
        "ids_as_list",
        _set(["steps", 0, "prompt_ids"], [1, 2, 3]),
        "wrong_type",
        "steps[0].prompt_ids",
    ),
    (
        "action_bytes",
        _set(["steps", 0, "action"], b"click"),
        "wrong_type",
        "steps[0].action",
    ),
    (
        "allowed_not_str",
        _set(["steps", 0, "allowed_actions"], ["a", 3]),
        "wrong_type",
        "allowed_actions[1]",
    ),
    ("step_not_map", _set(["steps", 1], [1, 2]), "wrong_type", "steps[1]"),
    ("outcome_unknown_word", _set(["outcome"], "maybe"), "wrong_type", "outcome"),
    (
        "ids_5_bytes",
        _set(["steps", 0, "prompt_ids"], b"\x00" * 5),
        "bad_array",
        "steps[0].prompt_ids",
    ),
    (
        "logprobs_6_bytes",
        _set(["steps", 0, "logprobs"], b"\x00" * 6),
        "bad_array",
        "steps[0].logprobs",
    ),
    ("nan_reward", _set(["reward"], math.nan), "nan", "reward"),
    (
        "inf_step_reward",
        _set(["steps", 1, "reward"], -math.inf),
        "nan",
        "steps[1].reward",
    ),
    ("nan_created_at", _set(["created_at"], math.nan), "nan", "created_at"),
    ("grammar_not_str", _set(["grammar"], b"root ::= x"), "wrong_type", "grammar"),
    ("grammar_too_long", _set(["grammar"], "x" * (MAX_GRAMMAR_CHARS + 1)), "oversized", "grammar"),
]


@pytest.mark.parametrize(
    ("mutate", "code", "field"),
    [c[1:] for c in MAP_CASES],
    ids=[c[0] for c in MAP_CASES],
)
def test_invalid_maps_raise_named_errors(rng, mutate, code, field):
    with pytest.raises(WireError) as e:
        decode(_mutated(rng, mutate))
    assert e.value.code == code
    assert str(e.value).startswith(f"{code}: ")
    assert field in str(e.value)
    if code != "missing_field" or field != "traj_id":
        assert e.value.traj_id == "t-bad"


def test_length_mismatch(rng):
    m = wire_map(make_trajectory(rng, n_steps=1))
    m["steps"][0]["response_ids"] = np.arange(3, dtype="<i4").tobytes()
    m["steps"][0]["logprobs"] = np.zeros(2, dtype="<f4").tobytes()
    with pytest.raises(WireError) as e:
        decode(pack(m))
    assert e.value.code == "length_mismatch"
    assert "steps[0].logprobs" in str(e.value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_logprobs(rng, bad):
    m = wire_map(make_trajectory(rng, n_steps=1))
    lp = np.frombuffer(m["steps"][0]["logprobs"], dtype="<f4").copy()
    lp[-1] = bad
    m["steps"][0]["logprobs"] = lp.tobytes()
    with pytest.raises(WireError) as e:
        decode(pack(m))
    assert e.value.code == "nan"
    assert "steps[0].logprobs" in str(e.value)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\xc1", "bad_msgpack"),  # 0xc1 is never used by msgpack
        (b"", "bad_msgpack"),
        (b"\x81\xa1a", "bad_msgpack"),  # truncated map
        (pack({"a": 1}) + b"\x00", "bad_msgpack"),  # trailing bytes
        (b"\x81\xa1a\xa2\xff\xfe", "bad_msgpack"),  # str that is not UTF-8
        (pack([1, 2, 3]), "not_a_map"),
        (pack(7), "not_a_map"),
        (pack(None), "not_a_map"),
    ],
)
def test_frames_that_are_not_trajectory_maps(frame, code):
    with pytest.raises(WireError) as e:
        decode(frame)
    assert e.value.code == code
    assert e.value.traj_id is None


def test_truncated_frame(rng):
    frame = encode(make_trajectory(rng))
    for cut in (1, 7, len(frame) // 2, len(frame) - 1):
        with pytest.raises(WireError) as e:
            decode(frame[:cut])
        assert e.value.code == "bad_msgpack"


def test_oversized_is_checked_before_unpacking(rng):
    frame = encode(make_trajectory(rng))
    assert decode(frame, max_bytes=len(frame)).traj_id
    with pytest.raises(WireError) as e:
        decode(frame, max_bytes=len(frame) - 1)
    assert e.value.code == "oversized"
    # Garbage that would be bad_msgpack is reported as oversized: the size check came first.
    with pytest.raises(WireError) as e:
        decode(b"\xc1" * 100, max_bytes=10)
    assert e.value.code == "oversized"


def test_grammar_is_optional_and_travels(rng):
    traj = make_trajectory(rng)
    plain = encode(traj)
    assert b"grammar" not in plain and decode(plain).grammar is None  # frames as before the field
    traj.grammar = 'root ::= "click(" [0-9] ")"\n'
    back = decode(encode(traj))
    assert back.grammar == traj.grammar
    assert_same_trajectory(traj, back)
    m = wire_map(traj)
    m["grammar"] = "x" * MAX_GRAMMAR_CHARS  # the limit itself is fine
    assert decode(pack(m)).grammar == m["grammar"]


def test_unknown_keys_are_ignored(rng):
    m = wire_map(make_trajectory(rng))
    m["screenshot_hash"] = "abc"
    m["steps"][0]["image_ref"] = "s3://x"
    assert decode(pack(m)).traj_id == m["traj_id"]


def test_every_code_is_covered():
    covered = {c[2] for c in MAP_CASES} | {
        "bad_msgpack",
        "not_a_map",
        "length_mismatch",
        "oversized",
    }
    assert covered == set(ERROR_CODES)


def test_package_is_light():
    assert buffer.SCHEMA_VERSION == SCHEMA_VERSION == 1
    code = "import sys, buffer; sys.exit('torch' in sys.modules or 'zmq' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0
