"""ShardServer over real ZMQ sockets on 127.0.0.1: every request answered, bad ones included."""

import struct

import msgpack
import numpy as np
import pytest
import zmq

from buffer.core.shard import ReplayShard
from buffer.net.dealer import ShardError
from buffer.net.insert_client import InsertClient
from buffer.net.sample_client import SampleClient
from buffer.net.server import MAX_SAMPLE_N, ShardServer
from buffer.wire.schema import encode
from tests.support.trajectories import make_trajectory, pack, wire_map

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def rng():
    return np.random.default_rng(5)


@pytest.fixture
def server():
    srv = ShardServer(ReplayShard(capacity=100), seed=0).start()
    yield srv
    srv.stop()
    assert not srv.running


class RawDealer:
    """A bare DEALER to send frames no real client would."""

    def __init__(self, address):
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)
        self.next = 1

    def request(self, *frames):
        self.sock.send_multipart(list(frames))
        assert self.sock.poll(10_000), "no reply from the shard"
        return self.sock.recv_multipart()

    def call(self, op, body):
        req = struct.pack(">Q", self.next)
        self.next += 1
        rid, reply = self.request(op, req, body)
        assert rid == req
        return msgpack.unpackb(reply, raw=False)

    def close(self):
        self.sock.close()


@pytest.fixture
def raw(server):
    d = RawDealer(server.address)
    yield d
    d.close()


def _insert_valid(raw, rng, n=3):
    trajs = [make_trajectory(rng) for _ in range(n)]
    for t in trajs:
        reply = raw.call(b"insert", encode(t))
        assert reply["status"] == "stored" and reply["traj_id"] == t.traj_id
    return [t.traj_id for t in trajs]


def test_address_is_loopback_tcp(server):
    assert server.address.startswith("tcp://127.0.0.1:")
    assert not server.address.endswith(":0")


def test_refuses_all_interfaces():
    with pytest.raises(ValueError, match="never to all interfaces"):
        ShardServer(ReplayShard(capacity=1), host="0.0.0.0")


def test_garbage_gets_named_errors_and_shard_keeps_serving(server, raw, rng):
    random_bytes = b"\xc1" + np.random.default_rng(0).bytes(300)
    truncated = encode(make_trajectory(rng))[:-10]
    m = wire_map(make_trajectory(rng, traj_id="no-ids"))
    del m["steps"][0]["response_ids"]
    cases = [
        (random_bytes, "bad_msgpack", None),
        (truncated, "bad_msgpack", None),
        (pack(m), "missing_field", "steps[0].response_ids"),
    ]
    for frame, code, field in cases:
        reply = raw.call(b"insert", frame)
        assert reply["status"] == "error" and reply["error"] == code, reply
        assert reply["detail"].startswith(code)
        if field:
            assert field in reply["detail"] and reply["traj_id"] == "no-ids"
        # ...and a correct insert right after is stored.
        ids = _insert_valid(raw, rng, n=1)
        assert ids[0] in server.shard.traj_ids()
    stats = server.shard.stats()
    assert stats["rejected"] == {"bad_msgpack": 2, "missing_field": 1}
    assert stats["size_trajectories"] == 3


def test_many_random_frames_never_stop_the_server(server, raw, rng):
    fuzz = np.random.default_rng(11)
    for _ in range(200):
        reply = raw.call(b"insert", fuzz.bytes(int(fuzz.integers(0, 200))))
        assert reply["status"] == "error" and reply["error"] in {
            "bad_msgpack",
            "not_a_map",
        }
    _insert_valid(raw, rng)
    assert len(server.shard) == 3


def test_bad_requests(server, raw, rng):
    assert raw.call(b"delete", b"")["error"] == "bad_request"
    # Wrong frame counts: still one reply each, with a req_id the client did not use.
    rid, body = raw.request(b"insert")
    assert rid == bytes(8) and msgpack.unpackb(body)["error"] == "bad_request"
    rid, body = raw.request(b"insert", struct.pack(">Q", 42), b"x", b"extra")
    assert rid == struct.pack(">Q", 42) and msgpack.unpackb(body)["error"] == "bad_request"
    for body in (
        b"\xc1",
        pack([3]),
        pack({"n": 0}),
        pack({"n": True}),
        pack({"n": MAX_SAMPLE_N + 1}),
    ):
        reply = raw.call(b"sample", body)
        assert reply["status"] == "error" and reply["error"] == "bad_request", body
    _insert_valid(raw, rng)
    assert len(server.shard) == 3


def test_exception_in_handler_becomes_error_reply(rng):
    class BrokenSample(ReplayShard):
        def sample(self, n, rng):
            raise RuntimeError("disk on fire")

    with ShardServer(BrokenSample(capacity=10)) as srv:
        d = RawDealer(srv.address)
        reply = d.call(b"sample", pack({"n": 2}))
        assert reply["status"] == "error" and reply["error"] == "internal"
        assert "RuntimeError" in reply["detail"] and "disk on fire" in reply["detail"]
        _insert_valid(d, rng)
        assert len(srv.shard) == 3
        d.close()


def test_oversized_frame_gets_a_reply():
    with ShardServer(ReplayShard(capacity=10, max_frame_bytes=1000)) as srv:
        d = RawDealer(srv.address)
        reply = d.call(b"insert", b"\x00" * 1500)
        assert reply["error"] == "oversized"
        d.close()


def test_sample_client(server, rng):
    with SampleClient(server.address, timeout_s=10) as sc:
        assert sc.sample(4) == []
        with InsertClient(server.address) as ic:
            trajs = {t.traj_id: t for t in (make_trajectory(rng) for _ in range(5))}
            for t in trajs.values():
                ic.insert(t)
            ic.flush()
        items = sc.sample(64)
        assert len(items) == 64
        for it in items:
            step = trajs[it["traj_id"]].steps[it["step_index"]]
            assert it["prompt_ids"].dtype == np.int32
            np.testing.assert_array_equal(it["prompt_ids"], step.prompt_ids)
            np.testing.assert_array_equal(it["response_ids"], step.response_ids)
            assert it["logprobs"].dtype == np.float32
            assert it["logprobs"].shape == it["response_ids"].shape
        with pytest.raises(ShardError) as e:
            sc.sample(0)
        assert e.value.reply["error"] == "bad_request"
        assert len(sc.sample(1)) == 1  # the client is still in step after an error


def test_stop_ends_the_thread_releases_the_port_and_is_idempotent():
    srv = ShardServer(ReplayShard(capacity=1)).start()
    port = int(srv.address.rsplit(":", 1)[1])
    srv.stop()
    srv.stop()
    assert not srv.running
    again = ShardServer(ReplayShard(capacity=1), port=port).start()  # the port is free once stop returns
    again.stop()


def test_port_in_use_fails_loudly(server):
    port = int(server.address.rsplit(":", 1)[1])
    with pytest.raises(RuntimeError, match=f"failed to bind 127.0.0.1:{port}"):
        ShardServer(ReplayShard(capacity=1), port=port).start()
