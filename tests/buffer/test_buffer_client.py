"""InsertClient: window backpressure, flush, acks, timeouts, over real ZMQ sockets."""

import msgpack
import numpy as np
import pytest
import zmq

from buffer.core.shard import ReplayShard
from buffer.net.insert_client import InsertClient
from buffer.net.sample_client import SampleClient
from buffer.net.server import ShardServer
from buffer.wire.schema import encode
from tests.support.trajectories import make_trajectory

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def rng():
    return np.random.default_rng(9)


class SilentRouter:
    """A ROUTER that answers only when told to: lets a test hold acks back."""

    def __init__(self):
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.received = []  # [identity, op, req_id, body]

    def receive(self, n):
        while len(self.received) < n:
            assert self.sock.poll(10_000), f"got {len(self.received)} requests, expected {n}"
            self.received.append(self.sock.recv_multipart())

    def ack(self, i, status="stored"):
        identity, _, req_id, body = self.received[i]
        traj_id = msgpack.unpackb(body)["traj_id"]
        reply = {
            "status": status,
            "traj_id": traj_id,
            "filter": None,
            "error": None,
            "detail": None,
            "seq": i,
        }
        self.sock.send_multipart([identity, req_id, msgpack.packb(reply)])

    def close(self):
        self.sock.close()


@pytest.fixture
def router():
    r = SilentRouter()
    yield r
    r.close()


def test_window_blocks_then_frees_on_ack(router, rng):
    trajs = [make_trajectory(rng) for _ in range(4)]
    with InsertClient(router.address, window=2, timeout_s=0.5) as client:
        client.insert(trajs[0])
        client.insert(trajs[1])  # both go out without any ack
        router.receive(2)
        assert client.in_flight == 2
        with pytest.raises(TimeoutError, match="window 2"):
            client.insert(trajs[2])  # window full and no ack comes
        assert client.sent == 2 and client.in_flight == 2
        client.timeout_s = 10  # from here on every wait is answered
        router.ack(0)
        client.insert(trajs[2])  # the ack frees one slot
        router.receive(3)
        assert client.in_flight == 2 and client.acks[trajs[0].traj_id]["status"] == "stored"
        assert [msgpack.unpackb(f[3])["traj_id"] for f in router.received] == [t.traj_id for t in trajs[:3]]
        with pytest.raises(TimeoutError, match="2 inserts unacknowledged"):
            client.flush(timeout_s=0.3)
        router.ack(1)
        router.ack(2, status="filtered")
        client.flush()
        assert client.in_flight == 0
        assert client.counts == {"stored": 2, "filtered": 1}
        assert set(client.acks) == {t.traj_id for t in trajs[:3]}


def test_request_ids_are_8_byte_counters_from_1(router, rng):
    with InsertClient(router.address, window=8) as client:
        for _ in range(3):
            client.insert(make_trajectory(rng))
        router.receive(3)
    assert [f[2] for f in router.received] == [i.to_bytes(8, "big") for i in (1, 2, 3)]
    assert all(f[1] == b"insert" for f in router.received)


def test_stream_through_real_shard_with_small_window(rng):
    shard = ReplayShard(capacity=1000, success_only=True)
    with (
        ShardServer(shard) as srv,
        InsertClient(srv.address, window=4, timeout_s=10) as client,
    ):
        trajs = [make_trajectory(rng) for _ in range(100)]
        for t in trajs:
            client.insert(t)
            assert client.in_flight <= 4
        client.insert(encode(trajs[0]))  # raw bytes, and a duplicate
        client.insert(b"\xc1garbage")
        client.flush()
        n_ok = sum(t.success for t in trajs)
        assert client.sent == 102 and client.in_flight == 0
        assert client.counts == {"stored": n_ok + 1, "filtered": 100 - n_ok, "error": 1}
        assert client.error_codes == {"bad_msgpack": 1}
        assert client.acks[trajs[0].traj_id]["status"] == "stored"
        assert client.acks["req:102"]["error"] == "bad_msgpack"
        with srv.lock:
            assert set(shard.traj_ids()) == {t.traj_id for t in trajs if t.success}
            assert shard.stats()["duplicates"] == 1


def test_poll_returns_each_ack_once_in_arrival_order(rng):
    shard = ReplayShard(capacity=1000, success_only=False)
    with ShardServer(shard) as srv, InsertClient(srv.address, window=2, timeout_s=10) as client:
        trajs = [make_trajectory(rng) for _ in range(10)]
        for t in trajs:
            client.insert(t)  # window 2: most acks are taken inside insert()
        client.flush()
        got = client.poll()
        assert [tid for tid, _ in got] == [t.traj_id for t in trajs]
        assert all(reply["status"] == "stored" for _, reply in got)
        assert client.poll() == []


def test_acks_are_bounded(rng):
    srv = ShardServer(ReplayShard(capacity=100)).start()
    with InsertClient(srv.address, window=4, max_acks=5) as client:
        trajs = [make_trajectory(rng) for _ in range(12)]
        for t in trajs:
            client.insert(t)
        client.flush()
        assert list(client.acks) == [t.traj_id for t in trajs[-5:]]
        assert client.counts["stored"] == 12
    srv.stop()


def test_timeout_when_nothing_listens(rng):
    with InsertClient("tcp://127.0.0.1:1", window=1, timeout_s=0.2) as client:
        client.insert(make_trajectory(rng))
        with pytest.raises(TimeoutError):
            client.flush()
    with (
        SampleClient("tcp://127.0.0.1:1", timeout_s=0.2) as sc,
        pytest.raises(TimeoutError),
    ):
        sc.sample(1)


def test_insert_rejects_other_types(router):
    with InsertClient(router.address) as client, pytest.raises(TypeError):
        client.insert({"traj_id": "x"})
