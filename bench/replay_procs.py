"""Processes and streams that bench/replay.py drives: the trajectory payload, the raw ZMQ ceiling's
server, shard processes (`python -m buffer`), the two pumps (a bare DEALER loop and the real
InsertClient, both with WINDOW requests in flight) and CPU accounting from /proc.

Not guaranteed: CPU figures are per process and per thread from /proc (clock ticks, 10 ms), so
short runs round; the machine's other load inflates them too.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgpack
import numpy as np
import zmq

from buffer.net.insert_client import InsertClient
from buffer.net.sample_client import SampleClient
from buffer.wire.schema import Step, Trajectory, encode

ROOT = Path(__file__).resolve().parents[1]

WINDOW = 64
_REQ = struct.Struct(">Q")


# --- payload ---


def make_frames(n: int, seed: int = 0, steps: int = 4, prompt: int = 728, response: int = 40) -> list[tuple[str, bytes, str]]:
    """n distinct trajectories of ~14.6 KB (4 steps of 728 prompt + 40 response tokens), as
    (traj_id, frame, group_id); every 4 consecutive ones share a group."""
    rng = np.random.default_rng(seed)
    step_objs = [
        Step(
            observation="page " * 40,
            prompt_ids=rng.integers(0, 32_000, prompt).astype(np.int32),
            response_ids=rng.integers(0, 32_000, response).astype(np.int32),
            logprobs=-rng.exponential(1.0, response).astype(np.float32),
            action='click("submit")',
            allowed_actions=['click("submit")', 'click("cancel")'],
            reward=0.0,
            done=i == steps - 1,
            policy_version=0,
        )
        for i in range(steps)
    ]
    out = []
    for k in range(n):
        tid, gid = uuid.UUID(bytes=rng.bytes(16)).hex, f"{seed}:{k // 4}"  # GRPO-like groups of 4
        t = Trajectory(tid, "click-button", gid, "actor-0", "miniwob", 0, 0, step_objs, 1.0, True, "correct", time.time())
        out.append((tid, encode(t), gid))
    return out


# --- processes ---


def raw_server() -> None:
    """The ceiling's server: ROUTER, msgpack.unpackb of the frame, a small msgpack ack."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    print("address", sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    seq = 0
    while True:
        identity, _op, req, body = sock.recv_multipart()
        m = msgpack.unpackb(body, raw=False)
        seq += 1
        ack = {"status": "stored", "traj_id": m.get("traj_id"), "filter": None, "error": None, "detail": None, "seq": seq}
        sock.send_multipart([identity, req, msgpack.packb(ack, use_bin_type=True)])


def spawn(cmd: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    if not line or line[0] != "address":
        proc.kill()
        raise RuntimeError(f"process did not start: {cmd}")
    return proc, line[1]


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(20)
    proc.stdout.close()


def shard_cmd(data_dir: str, capacity: int = 100_000, **config) -> list[str]:
    return [sys.executable, "-m", "buffer", "--data-dir", data_dir, "--capacity", str(capacity), "--config", json.dumps(config)]


# --- (a) and (b): one stream of inserts ---


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of a process, by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        out[task.name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def pump_raw(address: str, frames: list[tuple[str, bytes, str]]) -> dict:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    pending, gaps = 0, []
    t0 = last = time.perf_counter()
    for i in range(len(frames) + WINDOW):
        while pending and (pending >= WINDOW or i >= len(frames) or sock.poll(0)):
            msgpack.unpackb(sock.recv_multipart()[1], raw=False)
            pending -= 1
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
        if i < len(frames):
            sock.send_multipart([b"insert", _REQ.pack(i + 1), frames[i][1]], copy=False)
            pending += 1
    elapsed = time.perf_counter() - t0
    sock.close()
    return {"per_s": len(frames) / elapsed, "max_gap_ms": 1000 * max(gaps)}


def pump_client(client, frames: list[tuple[str, bytes, str]], sharded: bool = False) -> dict:
    clients = client.clients if sharded else [client]
    gaps, last_acked = [], 0
    t0 = last = time.perf_counter()
    for tid, frame, gid in frames:
        if sharded:
            client.insert(frame, traj_id=tid, group_id=gid)  # routed by group, as the actors do
        else:
            client.insert(frame)
        n = sum(sum(c.counts.values()) for c in clients)
        if n != last_acked:
            now = time.perf_counter()
            gaps.append(now - last)
            last, last_acked = now, n
    client.flush(120)
    elapsed = time.perf_counter() - t0
    gaps.append(time.perf_counter() - last)
    stored = sum(c.counts["stored"] for c in clients)
    if stored != len(frames):
        raise RuntimeError(f"only {stored} of {len(frames)} stored")
    return {"per_s": len(frames) / elapsed, "max_gap_ms": 1000 * max(gaps)}


def run_against(cmd: list[str], frames, raw: bool = False, stats: bool = False, warm=None) -> dict:
    """One stream into a fresh server process (after `warm` frames, unmeasured); adds the
    server's CPU µs per message, in all and by thread (busiest first), and the client's."""
    proc, address = spawn(cmd)
    try:
        if warm:
            with InsertClient(address, window=WINDOW, timeout_s=60) as ic:
                pump_client(ic, warm)
        cpu0, threads0, me0 = proc_cpu_s(proc.pid), thread_cpu_s(proc.pid), time.process_time()
        if raw:
            out = pump_raw(address, frames)
        else:
            with InsertClient(address, window=WINDOW, timeout_s=60) as ic:
                out = pump_client(ic, frames)
        out["client_cpu_us"] = 1e6 * (time.process_time() - me0) / len(frames)
        out["server_cpu_us"] = 1e6 * (proc_cpu_s(proc.pid) - cpu0) / len(frames)
        threads = thread_cpu_s(proc.pid)
        per = sorted((1e6 * (v - threads0.get(k, 0.0)) / len(frames) for k, v in threads.items()), reverse=True)
        out["server_threads_cpu_us"] = [round(x) for x in per if x >= 1]
        if stats:
            with SampleClient(address, timeout_s=30) as sc:
                out["durability"] = sc.stats()["durability"]
    finally:
        stop(proc)
    return out
