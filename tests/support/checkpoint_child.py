"""A learner process for tests/learner/test_checkpoint.py: `train` trains 3 steps, snapshots, prints the
next two losses and kills itself with SIGKILL; `resume` restores the snapshot and prints the
next two losses. Losses are printed as float.hex() so the comparison is bit for bit.

    python tests/support/checkpoint_child.py train|resume WORK_DIR [cpu|cuda] [ZERO_STAGE]"""

import os
import signal
import sys
from pathlib import Path

import torch

from learner import deepspeed_setup
from learner.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from learner.objectives.sft import sft_loss
from learner.tiny_model import TinyModelSpec, build_tiny_model

ROOT = Path(__file__).resolve().parents[2]


def batch(i: int):
    g = torch.Generator().manual_seed(100 + i)
    ids = torch.randint(0, 2000, (4, 24), generator=g)
    labels = ids.clone()
    labels[:, :12] = -100
    return ids, labels


def step(engine, i: int) -> float:
    ids, labels = (t.to(engine.device) for t in batch(i))
    # Dropout draws from the device's RNG stream: the resume must restore it (CPU or CUDA).
    logits = torch.nn.functional.dropout(engine(input_ids=ids).logits, p=0.1, training=True)
    loss = sft_loss(logits, labels, torch.ones(4, device=engine.device))
    engine.backward(loss)
    engine.step()
    return float(loss)


def main(mode: str, work: str, device: str = "cpu", zero_stage: str = "1") -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    deepspeed_setup.init_rank(0, 1, "127.0.0.1", deepspeed_setup.free_port(), "nccl" if device == "cuda" else "gloo")
    path = build_tiny_model(TinyModelSpec(), Path(work) / "model")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    cfg = deepspeed_setup.load_config(str(ROOT / "configs/deepspeed/cpu.json"), micro_batch=4, grad_accum=1,
                                      lr=3e-3, zero_stage=int(zero_stage), grad_clip=1.0, warmup_steps=2)
    engine, _ = deepspeed_setup.initialize(model, cfg)
    snapshots = Path(work) / "checkpoints"
    if mode == "train":
        for i in range(3):
            step(engine, i)
        save_checkpoint(snapshots, engine, engine.module, AutoTokenizer.from_pretrained(path),
                      {"step": 3, "policy_version": 1, "counters": {}, "numpy_rng": None}, keep=2)
        start = 3
    else:
        state = load_checkpoint(latest_checkpoint(snapshots), engine)
        start = state["step"]
    print("LOSSES", step(engine, start).hex(), step(engine, start + 1).hex(), flush=True)
    if mode == "train":
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(*sys.argv[1:])
