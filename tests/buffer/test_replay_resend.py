"""InsertClient resends: after a reconnect to a restarted shard on the same address, and (opt-in)
when an ack is late; the shard stores a resent trajectory once."""

import time

import msgpack
import numpy as np
import pytest
import zmq

from buffer.core.shard import ReplayShard
from buffer.net.insert_client import InsertClient
from buffer.net.server import ShardServer
from buffer.wire.schema import encode
from tests.support.trajectories import make_trajectory

pytestmark = pytest.mark.timeout(60)


class Router:
    """A ROUTER that acks only when told to."""

    def __init__(self, address="tcp://127.0.0.1:*"):
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(address)
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def receive(self):
        assert self.sock.poll(10_000), "no request"
        return self.sock.recv_multipart()

    def ack(self, msg):
        identity, _, req, body = msg
        reply = {"status": "stored", "traj_id": msgpack.unpackb(body)["traj_id"], "detail": None}
        self.sock.send_multipart([identity, req, msgpack.packb(reply)])

    def close(self):
        self.sock.close(linger=0)


def test_late_ack_triggers_a_resend_when_enabled():
    router = Router()
    t = make_trajectory(np.random.default_rng(130))
    try:
        with InsertClient(router.address, window=4, timeout_s=10, resend_after_s=0.2) as ic:
            ic.insert(t)
            first = router.receive()  # never answered
            ic.poll()
            with pytest.raises(TimeoutError):
                ic.flush(timeout_s=0.6)  # meanwhile the client sends it again
            resent = [router.receive()]
            while router.sock.poll(200):
                resent.append(router.sock.recv_multipart())
            for msg in resent:  # the same frame each time, under a new request id
                assert msg[3] == first[3] and msg[2] != first[2]
            router.ack(resent[-1])  # only the newest request id is still pending
            ic.flush()
            assert ic.resends >= len(resent) and ic.counts["stored"] == 1
    finally:
        router.close()


def test_resend_after_a_restarted_shard_is_stored_once():
    rng = np.random.default_rng(131)
    trajs = [make_trajectory(rng) for _ in range(3)]
    router = Router()
    address = router.address
    with InsertClient(address, window=8, timeout_s=10) as ic:
        for t in trajs:
            ic.insert(t)
        got = [router.receive() for _ in trajs]
        router.ack(got[0])  # one acked; two lost with the "crashed" shard
        ic.poll()
        router.close()
        shard = ReplayShard(capacity=10)
        shard.insert(encode(trajs[0]))  # the restarted shard already holds the acked one
        srv = _bind_again(shard, int(address.rsplit(":", 1)[1]))
        try:
            ic.flush()  # reconnect -> resend of the two unacknowledged ones
            assert ic.reconnects == 1 and ic.resends == 2
            assert ic.counts["stored"] == 3
            with srv.lock:
                assert shard.traj_ids() == [t.traj_id for t in trajs]
                assert shard.stats()["duplicates"] == 0
        finally:
            srv.stop()


def _bind_again(shard, port, attempts=100):
    """ZMQ releases a closed listener's port asynchronously: retry the bind for a while."""
    for _ in range(attempts):
        try:
            return ShardServer(shard, port=port).start()
        except RuntimeError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} stayed busy")
