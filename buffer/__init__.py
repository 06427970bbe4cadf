"""Replay buffer room: wire schema, replay shards, ZMQ server and clients.

One concept per module: schema (wire format: types, encode), wire_decode (the validating
decode every frame passes), config (ReplayConfig), storage (FIFO trajectories and step slots),
sumtree, sampler (priority^α × recency, IS weights), recency, filters, limiter (samples per
insert), groups (GRPO), items (sample maps), segment_log + log_writer + snapshot + persistence
(durability), restore (a restarted shard's rebuild), meters, shard (ReplayShard: the
composition), protocol + server (ShardServer), zmqio (multipart I/O on the hot paths), dealer
(the clients' DEALER base), client (InsertClient), sample_client (SampleClient), sharded
(clients over S shards, routing by group), service (ShardActor for Ray); `python -m buffer`
runs a standalone shard process.

Importing `buffer` loads only the schema and its decoder (numpy, msgpack, msgspec); import the
modules for the rest. Never imports torch.
"""

from buffer.wire.decode import decode
from buffer.wire.schema import SCHEMA_VERSION, Step, Trajectory, WireError, encode

__all__ = ["SCHEMA_VERSION", "Step", "Trajectory", "WireError", "decode", "encode"]
