"""A run you can watch: a short real launch (`launch/cluster.py`, Ray with its dashboard, one actor
with Chromium, one shard, the learner) is watched the way its first lines tell a person to.

- Ray's metrics endpoint, scraped over HTTP while the run is busy, holds Flywheel's series for the
  actor, the shard and the learner, with rates above zero and slot counts that add up.
- The dashboard, loaded in headless Chromium, asks for a token; the token the printed command
  gives lets it in, and its Actors view lists Flywheel's named actors.
- W&B (offline) got every component's series beside the run's own, and the progress line its rates.
"""

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.env.browser import CHROMIUM, CHROMIUM_FLAGS
from launch.cluster import dashboard_port
from weights.group import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(600)
SLOTS = 4


def launch(run_dir: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "launch/cluster.py"), f"run.dir={run_dir}", "run.max_minutes=1.5",
           f"cluster.dashboard_port={port}", "logger.metrics.every_s=2", "run.progress_every_s=5",
           "learner.min_replay_steps=4", "learner.samples_per_insert=1000", f"rollout.slots={SLOTS}"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"})


def lines_of(proc: subprocess.Popen) -> queue.Queue:
    out: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [out.put(line) for line in proc.stdout], daemon=True).start()
    return out


def first_lines(out: queue.Queue, log: list[str], timeout_s: float) -> tuple[dict, str]:
    """The watch JSON line and the sentence after it."""
    deadline = time.time() + timeout_s
    info = None
    while time.time() < deadline:
        try:
            line = out.get(timeout=1)
        except queue.Empty:
            continue
        log.append(line)
        if info is not None:
            return info, line
        if line.startswith("{") and '"dashboard"' in line:
            info = json.loads(line)
    raise AssertionError("the run never printed where to watch it:\n" + "".join(log[-40:]))


def scrape(urls: list[str]) -> dict[tuple[str, str, str], dict]:
    """{(metric, component, index): {tag: value}} of Flywheel's series on every node."""
    found: dict = {}
    for url in urls:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if not sample.name.startswith("ray_flywheel_"):
                    continue
                labels = sample.labels
                tag = next((v for k, v in labels.items() if k in ("state", "task", "part", "status", "reason")), "")
                key = (sample.name.removeprefix("ray_"), labels.get("component"), labels.get("index"))
                found.setdefault(key, {})[tag] = sample.value
    return found


def busy(found: dict) -> bool:
    rates = [("flywheel_actor_episodes_per_s", "actor"), ("flywheel_actor_tokens_per_s", "actor"),
             ("flywheel_shard_inserts_per_s", "shard"), ("flywheel_shard_samples_per_s", "shard"),
             ("flywheel_learner_steps_per_s", "learner")]
    return all(found.get((name, comp, "0"), {}).get("", 0) > 0 for name, comp in rates)


def check_dashboard(info: dict, token: str) -> str:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(info["dashboard"], wait_until="domcontentloaded")
            field = page.get_by_placeholder("Enter your authentication token")
            field.wait_for(timeout=60_000)  # the dashboard asks before it shows anything
            field.fill(token)
            page.get_by_role("button", name="Submit").click()
            field.wait_for(state="hidden", timeout=30_000)
            page.goto(info["dashboard"] + "/#/actors", wait_until="domcontentloaded")
            for name in ("actor-0", "shard-0", "learner-0"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
            return page.inner_text("body")
        finally:
            browser.close()


def test_a_short_run_is_watched_through_its_metrics_and_its_dashboard(tmp_path):
    proc = launch(tmp_path / "run", free_port("127.0.0.1"))
    log: list[str] = []
    out = lines_of(proc)
    try:
        info, sentence = first_lines(out, log, timeout_s=120)
        assert info["dashboard"].startswith("http://127.0.0.1:") and info["auth"] == "token"
        assert f"paste what `{info['token_command']}` prints" in sentence and info["dashboard"] in sentence
        assert info["metrics"] and Path(info["logs"]).is_dir()

        deadline, found = time.time() + 240, {}
        while time.time() < deadline and not busy(found):
            time.sleep(3)
            found = scrape(info["metrics"])
        assert busy(found), f"no busy rates within 240 s; Flywheel series seen: {sorted(found)}"
        slots = found[("flywheel_actor_slots", "actor", "0")]
        assert set(slots) == {"generating", "waiting_page", "idle"} and sum(slots.values()) == SLOTS
        assert found[("flywheel_shard_size_trajectories", "shard", "0")][""] > 0
        assert 0 <= found[("flywheel_actor_success", "actor", "0")]["click-button"] <= 1
        assert found[("flywheel_learner_loss", "learner", "0")][""] > 0
        assert set(found[("flywheel_learner_time_share", "learner", "0")]) <= {"wait", "draw", "train", "sync"}

        token_cmd = [str(Path(sys.executable).parent / info["token_command"].split()[0]),
                     *info["token_command"].split()[1:]]
        token = subprocess.run(token_cmd, capture_output=True, text=True, check=True, timeout=60).stdout.strip()
        assert token
        body = check_dashboard(info, token)
        assert "Authentication Token Required" not in body

        assert proc.wait(timeout=300) == 0, "".join(log[-40:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        while not out.empty():
            log.append(out.get())
    assert any(line.startswith("summary:") for line in log), "".join(log[-40:])
    assert any("/s, " in line and " tok/s) | success" in line for line in log), "".join(log[-40:])
    grafana = json.loads((tmp_path / "run" / "grafana" / "flywheel.json").read_text())
    assert "ray_flywheel_actor_episodes_per_s" in json.dumps(grafana)  # the run's copy of the Grafana dashboard
    logged = b"".join(f.read_bytes() for f in (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    for key in ("actor/0/episodes_per_s", "actor/0/slots/generating", "shard/0/inserts_per_s",
                "learner/0/steps_per_s", "learner/0/time_share/train", "episodes_per_s", "wall_s", "learner_step"):
        assert key.encode() in logged, f"W&B's offline log has no {key}"


def test_a_dashboard_port_held_by_another_run_is_replaced_by_a_free_one(capsys):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        port = dashboard_port("127.0.0.1", taken)
    assert port != taken and port > 0
    assert f"dashboard port {taken} on 127.0.0.1 is taken (another run?): this run's dashboard uses {port}" in (
        capsys.readouterr().out)
    assert dashboard_port("127.0.0.1", port) == port  # free again: kept
