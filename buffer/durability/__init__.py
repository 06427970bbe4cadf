"""What survives a crash: the segment log and its writer, shard snapshots, record formats (persistence) and the rebuild of a restarted shard (restore)."""
