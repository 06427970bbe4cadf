"""Replay buffer room: wire schema, shard storage, ZMQ server and clients.

Importing `buffer` loads only the schema (numpy, msgpack); import `buffer.client`,
`buffer.server`, `buffer.shard` or `buffer.service` for the rest. Never imports torch.
"""

from buffer.schema import SCHEMA_VERSION, Step, Trajectory, WireError, decode, encode

__all__ = ["SCHEMA_VERSION", "Step", "Trajectory", "WireError", "decode", "encode"]
