"""DeepSpeed learner step vs a plain PyTorch step on the same batch and the same model.

Both run in this process, interleaved in blocks (plain, DS, plain, DS, ...) so that machine noise
falls on both alike; the figure is the ratio of median step times. The step is the learner's:
forward, SFT loss, backward, gradient clipping, AdamW (torch's, as configs/deepspeed/cpu.json),
scheduler. Ends with one JSON line: {"deepspeed_vs_plain": ..., "by_zero_stage": {...}, ...}.

    python bench/learner.py [--hidden 256 --layers 4 --batch 16 --seq 256 --blocks 6 --steps 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from learner import deepspeed_setup
from learner.objectives.sft import sft_loss


def make_model(hidden: int, layers: int, vocab: int, seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden,
                      num_hidden_layers=layers, num_attention_heads=hidden // 32,
                      num_key_value_heads=hidden // 32, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    return Qwen2ForCausalLM(cfg)


def make_batch(batch: int, seq: int, vocab: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    labels = ids.clone()
    labels[:, : seq // 2] = -100  # loss on the second half, like a response after a prompt
    return ids, torch.ones_like(ids), labels, torch.ones(batch)


class PlainStep:
    def __init__(self, model, ds_config: dict):
        opt = ds_config["optimizer"]["params"]
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=opt["lr"], betas=tuple(opt["betas"]),
                                     eps=opt["eps"], weight_decay=opt["weight_decay"])
        warm = ds_config["scheduler"]["params"]["warmup_num_steps"]
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / warm))
        self.clip = ds_config["gradient_clipping"]

    def __call__(self, ids, mask, labels, w) -> float:
        loss = sft_loss(self.model(input_ids=ids, attention_mask=mask).logits, labels, w)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss)


class DeepSpeedStep:
    def __init__(self, model, ds_config: dict):
        self.engine, _ = deepspeed_setup.initialize(model, ds_config)

    def __call__(self, ids, mask, labels, w) -> float:
        loss = sft_loss(self.engine(input_ids=ids, attention_mask=mask).logits, labels, w)
        self.engine.backward(loss)
        self.engine.step()
        return float(loss)


def timed(step, batch, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        step(*batch)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--steps", type=int, default=5, help="steps per block")
    ap.add_argument("--stages", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    deepspeed_setup.init_rank(0, 1, "127.0.0.1", deepspeed_setup.free_port(), "gloo")

    base = make_model(args.hidden, args.layers, args.vocab, seed=0)
    n_params = sum(p.numel() for p in base.parameters())
    batch = make_batch(args.batch, args.seq, args.vocab, seed=1)
    print(f"model {n_params / 1e6:.2f}M params, batch {args.batch}x{args.seq}, {args.threads} thread(s)")

    results = {}
    for stage in [int(s) for s in args.stages.split(",")]:
        ds_config = deepspeed_setup.load_config(
            str(ROOT / "configs/deepspeed/cpu.json"), micro_batch=args.batch, grad_accum=1, lr=1e-3,
            zero_stage=stage, grad_clip=1.0, warmup_steps=10)
        plain = PlainStep(copy.deepcopy(base), ds_config)
        ds = DeepSpeedStep(copy.deepcopy(base), ds_config)
        first = (plain(*batch), ds(*batch))  # warm-up, and the same model gives the same loss
        times = {"plain": [], "deepspeed": []}
        for _ in range(args.blocks):
            times["plain"] += timed(plain, batch, args.steps)
            times["deepspeed"] += timed(ds, batch, args.steps)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["deepspeed"] / med["plain"]
        results[stage] = {"plain_s": round(med["plain"], 4), "deepspeed_s": round(med["deepspeed"], 4),
                          "ratio": round(ratio, 3), "first_loss": [round(x, 5) for x in first]}
        print(f"ZeRO-{stage}: plain {med['plain'] * 1e3:7.1f} ms/step | DeepSpeed "
              f"{med['deepspeed'] * 1e3:7.1f} ms/step | DeepSpeed/plain {ratio:.3f} "
              f"(first losses {first[0]:.5f} vs {first[1]:.5f})")
    default_stage = 1  # configs/learner/cpu.yaml
    key = default_stage if default_stage in results else next(iter(results))
    print(json.dumps({"deepspeed_vs_plain": results[key]["ratio"], "zero_stage": key,
                      "by_zero_stage": {str(k): v["ratio"] for k, v in results.items()},
                      "params_m": round(n_params / 1e6, 2)}))


if __name__ == "__main__":
    main()
