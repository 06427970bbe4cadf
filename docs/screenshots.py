"""How docs/dashboard-actors.png and docs/prometheus-series.png were made, and how to make them again.

    .venv/bin/python docs/screenshots.py [--minutes 2.5]

Starts a real run (`launch/cluster.py`, the default loop on the embedded model, with the Ray
dashboard on a free port), `launch/monitor.py` (Prometheus) on it, waits until the run is busy,
then, in headless Chromium: logs into the dashboard with the token `ray get-auth-token` prints and
shoots its Actors view; opens Prometheus's graph of Flywheel's rates and shoots it. The run ends by
itself; the monitor is stopped. Prints one JSON line with the files written.

NOT guaranteed: the same pixels twice (timings, series and window differ per run).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actors.env.browser import CHROMIUM, CHROMIUM_FLAGS
from weights.group import free_port

QUERY = 'sum by (__name__) ({__name__=~"ray_flywheel_(actor_episodes|actor_env_steps|shard_inserts|shard_samples)_per_s"})'


def first_json(proc: subprocess.Popen, key: str, timeout_s: float = 180) -> dict:
    deadline = time.time() + timeout_s
    for line in proc.stdout:
        if line.startswith("{") and f'"{key}"' in line:
            return json.loads(line)
        if time.time() > deadline:
            break
    raise RuntimeError(f"the run printed no {key} line")


def shoot(dashboard: str, prometheus: str, token: str, out: Path) -> list[str]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(dashboard, wait_until="domcontentloaded")
            field = page.get_by_placeholder("Enter your authentication token")
            field.wait_for(timeout=60_000)
            field.fill(token)
            page.get_by_role("button", name="Submit").click()
            field.wait_for(state="hidden", timeout=30_000)
            page.goto(dashboard + "/#/actors", wait_until="domcontentloaded")
            page.get_by_text("learner-0", exact=True).first.wait_for(timeout=60_000)
            time.sleep(3)
            page.screenshot(path=str(out / "dashboard-actors.png"))
            q = urllib.parse.urlencode({"g0.expr": QUERY, "g0.tab": "0", "g0.range_input": "5m"})
            page.goto(f"{prometheus}/graph?{q}", wait_until="networkidle")
            time.sleep(3)
            page.screenshot(path=str(out / "prometheus-series.png"))
        finally:
            browser.close()
    return [str(out / "dashboard-actors.png"), str(out / "prometheus-series.png")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=2.5)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    run_dir = ROOT / "runs" / f"screenshots-{time.strftime('%Y%m%d-%H%M%S')}"
    run = subprocess.Popen([sys.executable, str(ROOT / "launch/cluster.py"), f"run.dir={run_dir}",
                            f"run.max_minutes={args.minutes}", f"cluster.dashboard_port={free_port()}",
                            "logger.wandb.enabled=false", "logger.metrics.every_s=2"],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    monitor = None
    try:
        info = first_json(run, "dashboard")
        port = free_port()
        time.sleep(10)  # the dashboard writes its service-discovery file
        monitor = subprocess.Popen([sys.executable, str(ROOT / "launch/monitor.py"), f"--run-dir={run_dir}",
                                    f"--port={port}", "--scrape-s=2"], cwd=ROOT)
        time.sleep(max(60 * args.minutes - 50, 30))  # Prometheus gathers a minute or more of a busy run
        token = subprocess.run([str(Path(sys.executable).parent / "ray"), "get-auth-token"], check=True,
                               capture_output=True, text=True).stdout.strip()
        files = shoot(info["dashboard"], f"http://127.0.0.1:{port}", token, args.out)
        run.wait(timeout=600)
    finally:
        if monitor is not None:
            monitor.send_signal(signal.SIGTERM)
            monitor.wait(timeout=60)
        if run.poll() is None:
            run.kill()
            run.wait()
    print(json.dumps({"files": files, "run_dir": str(run_dir), "run_exit": run.returncode}))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
