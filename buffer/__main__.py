"""Run one replay shard as a plain process: `python -m buffer --port 5555 --data-dir DIR ...`.

Prints one line `address tcp://HOST:PORT` on stdout once it serves, then serves until SIGTERM or
SIGINT (it closes its log on the way out). Used by the kill -9 test and the benchmark; Ray hosts
shards through buffer/shard_actor.py instead.

Not guaranteed: nothing supervises this process (no restart on crash).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from buffer.core.shard import ReplayShard
from buffer.net.server import ShardServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m buffer", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--capacity", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--config", default="{}", help="ReplayConfig keys as a JSON map")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    config = json.loads(args.config)
    if args.data_dir:
        config["data_dir"] = args.data_dir
    shard = ReplayShard(args.capacity, config=config)
    server = ShardServer(shard, host=args.host, port=args.port, seed=args.seed).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"address {server.address}", flush=True)
    print(f"restored {len(shard)}", flush=True)
    done.wait()
    server.stop()
    shard.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
