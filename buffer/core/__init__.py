"""The replay itself, in memory: ReplayShard (shard) around its ShardState (shard_state), composed
of storage, sum trees, the prioritized sampler, recency, filters, the samples-per-insert limiter,
GRPO groups, sample items, meters and its config (ReplayConfig, and BufferConfig for launch)."""
