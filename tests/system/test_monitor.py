"""Watching a run: the Grafana dashboard generated from launch/metrics.SERIES (and its committed
copy), the Prometheus config `make monitor` writes for a run, and launch/monitor.py end to end: a
real Ray actor's Reporter sets gauges, the monitor's Prometheus scrapes them, and no Prometheus
process outlives the monitor."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from launch import grafana, monitor
from launch.metrics import SERIES, metric_name

ROOT = Path(__file__).resolve().parents[2]
DOCS_DASHBOARD = ROOT / "docs" / "grafana" / "flywheel.json"
HAVE_PROMETHEUS = bool(shutil.which("prometheus")) or os.path.exists("/usr/bin/prometheus")
# As root (CI) `make test` installs Prometheus, so a missing one there is a failure, not a skip.
needs_prometheus = pytest.mark.skipif(not HAVE_PROMETHEUS and os.geteuid() != 0,
                                      reason="prometheus is not installed (sudo apt-get install -y prometheus)")
pytestmark = pytest.mark.timeout(300)


# ---------------------------------------------------------------- the Grafana dashboard


def rows_and_panels(dash: dict) -> dict[str, list[dict]]:
    """{row title: the panels that follow it}."""
    out: dict[str, list[dict]] = {}
    for p in dash["panels"]:
        if p["type"] == "row":
            out[p["title"]] = []
        else:
            out[list(out)[-1]].append(p)
    return out


def test_dashboard_has_one_panel_per_series_of_every_component():
    dash = json.loads(grafana.render())
    assert dash["schemaVersion"] == 39 and dash["uid"] == "flywheel"
    rows = rows_and_panels(dash)
    assert list(rows) == ["actor", "shard", "learner"]
    for component, series_list in SERIES.items():
        panels = rows[component]
        assert len(panels) == len(series_list)
        for p, s in zip(panels, series_list, strict=True):
            assert p["type"] == "timeseries" and p["title"] == s.metric and p["description"] == s.description
            (target,) = p["targets"]
            assert target["expr"].startswith(f"ray_{metric_name(component, s)}{{")
            assert target["datasource"] == p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in dash["panels"])
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["index"]["includeAll"] and variables["index"]["allValue"] == ".*"


def test_dashboard_panels_checked_by_hand():
    rows = rows_and_panels(json.loads(grafana.render()))
    by_title = {(c, p["title"]): p for c, panels in rows.items() for p in panels}
    time_share = by_title["actor", "time_share"]
    assert time_share["targets"][0]["expr"] == 'ray_flywheel_actor_time_share{index=~"$index"}'
    assert time_share["targets"][0]["legendFormat"] == "{{component}}-{{index}} {{part}}"
    assert time_share["fieldConfig"]["defaults"]["unit"] == "percentunit"
    inserts = by_title["shard", "inserts_per_s"]
    assert inserts["targets"][0]["expr"] == 'ray_flywheel_shard_inserts_per_s{index=~"$index"}'
    assert inserts["targets"][0]["legendFormat"] == "{{component}}-{{index}}"
    assert inserts["fieldConfig"]["defaults"]["unit"] == "suffix: trajectories/s"
    assert by_title["shard", "filtered"]["targets"][0]["legendFormat"] == "{{component}}-{{index}} {{reason}}"
    assert by_title["learner", "sync_bytes"]["fieldConfig"]["defaults"]["unit"] == "bytes"
    assert by_title["learner", "step_s"]["fieldConfig"]["defaults"]["unit"] == "s"
    assert by_title["learner", "loss"]["fieldConfig"]["defaults"]["unit"] == "short"
    # The learner exports both its step rate and its step number: two panels.
    assert {"steps_per_s", "step"} <= {t for c, t in by_title if c == "learner"}


def test_committed_dashboard_is_what_the_generator_writes():
    assert DOCS_DASHBOARD.read_text() == grafana.render(), (
        "docs/grafana/flywheel.json is stale: run .venv/bin/python -m launch.grafana --out docs/grafana/flywheel.json")


def test_grafana_command_writes_the_dashboard(tmp_path):
    out = tmp_path / "grafana" / "flywheel.json"
    proc = subprocess.run([sys.executable, "-m", "launch.grafana", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == grafana.render()
    assert grafana.write_dashboard(tmp_path / "again.json") == tmp_path / "again.json"


# ---------------------------------------------------------------- the Prometheus config


def fake_session(run_dir: Path, ray_root: Path, discovery: bool = True, ports: tuple[int, ...] = (45678,)) -> Path:
    """A run dir laid out as launch/cluster.py leaves it: `<run>/ray` a link to a short temp dir
    holding `session_<time>` and its `session_latest` link."""
    session = ray_root / "session_2026-01-01_00-00-00_000000_1"
    session.mkdir(parents=True)
    (ray_root / "session_latest").symlink_to(session)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "ray").symlink_to(ray_root)
    for i, port in enumerate(ports):
        (session / f"metrics_export_port_node{i}").write_text(str(port))
    if discovery:
        (session / monitor.RAY_DISCOVERY).write_text('[{"labels": {"job": "ray"}, "targets": ["10.0.0.1:1"]}]')
    return session


def scrape_job(config: Path) -> dict:
    text = yaml.safe_load(config.read_text())
    (job,) = text["scrape_configs"]
    return {"global": text["global"], **job}


def test_config_points_at_the_runs_session_discovery_file(tmp_path):
    run_dir = tmp_path / "runs" / "r1"
    session = fake_session(run_dir, tmp_path / "fw-ray-x")
    config = monitor.write_config(run_dir, scrape_s=5)
    assert config == run_dir / "prometheus" / "prometheus.yml"
    job = scrape_job(config)
    assert job["file_sd_configs"] == [{"files": [str(session / "prom_metrics_service_discovery.json")]}]
    assert job["job_name"] == "ray" and job["global"]["scrape_interval"] == "5s"
    assert (run_dir / "prometheus" / "data").is_dir()
    assert scrape_job(monitor.write_config(run_dir, scrape_s=0.5))["global"]["scrape_interval"] == "500ms"


def test_config_without_a_dashboard_lists_this_nodes_metrics_ports(tmp_path):
    run_dir = tmp_path / "run"
    fake_session(run_dir, tmp_path / "ray", discovery=False, ports=(41000, 41001))
    job = scrape_job(monitor.write_config(run_dir))
    targets = run_dir / "prometheus" / "targets.json"
    assert job["file_sd_configs"] == [{"files": [str(targets)]}]
    assert json.loads(targets.read_text()) == [{"labels": {"job": "ray"},
                                                "targets": ["127.0.0.1:41000", "127.0.0.1:41001"]}]


def test_missing_run_or_session_is_named(tmp_path):
    with pytest.raises(monitor.MonitorError, match="does not exist"):
        monitor.session_of(tmp_path / "nope")
    (tmp_path / "bare").mkdir()
    with pytest.raises(monitor.MonitorError, match="has no Ray session"):
        monitor.session_of(tmp_path / "bare")
    session = fake_session(tmp_path / "gone", tmp_path / "ray-gone")
    shutil.rmtree(session)
    with pytest.raises(monitor.MonitorError, match="which is gone"):
        monitor.session_of(tmp_path / "gone")
    with pytest.raises(monitor.MonitorError, match="no run under"):
        monitor.newest_run(tmp_path / "no-runs")


def test_newest_run_is_the_last_session_started(tmp_path):
    runs = tmp_path / "runs"
    old = fake_session(runs / "b-old", tmp_path / "ray-old")
    fake_session(runs / "a-new", tmp_path / "ray-new")
    (runs / "no-ray").mkdir()
    os.utime(old, (1_000_000, 1_000_000))
    assert monitor.newest_run(runs) == runs / "a-new"


# ---------------------------------------------------------------- the monitor process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "(zombie)" not in next((line for line in status.splitlines() if line.startswith("State:")), "")


def prometheus_pids(config: Path) -> list[int]:
    """Live processes running Prometheus on `config` (unique per test)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"--config.file={config}".encode() in args and alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


class MonitorProcess:
    """launch/monitor.py as `make monitor` runs it, its output (stdout and stderr) read as it comes."""

    def __init__(self, run_dir: Path, port: int, scrape_s: float = 5):
        cmd = [sys.executable, "launch/monitor.py", "--run-dir", str(run_dir), "--port", str(port),
               "--scrape-s", str(scrape_s)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_announced(self, timeout_s: float = 60) -> None:
        """Until it has printed the URL and the example query (Prometheus is ready by then)."""
        deadline = time.monotonic() + timeout_s
        while not any(line.startswith("Example query:") for line in self.lines):
            if self.proc.poll() is not None:
                self._reader.join(10)
                raise AssertionError(f"the monitor exited with {self.proc.returncode}:\n{self.output()}")
            assert time.monotonic() < deadline, f"the monitor said nothing in {timeout_s} s:\n{self.output()}"
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(30)
        return self.proc.returncode


def gone(pids: list[int], timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@needs_prometheus
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_monitor_leaves_no_prometheus_behind(tmp_path, sig):
    """Stopped (SIGTERM, Ctrl-C's SIGINT) or killed outright, the monitor takes Prometheus with it."""
    run_dir = tmp_path / "run"
    fake_session(run_dir, tmp_path / "fw-ray", discovery=False)
    port = free_port()
    monitor_process = MonitorProcess(run_dir, port)
    try:
        monitor_process.wait_announced()
        pids = prometheus_pids(run_dir / "prometheus" / "prometheus.yml")
        assert len(pids) == 1
    finally:
        status = monitor_process.stop(sig)
    out = monitor_process.output()
    assert f"Prometheus: http://127.0.0.1:{port} (run {run_dir};" in out
    assert f"Example query: ray_flywheel_actor_episodes_per_s  ->  http://127.0.0.1:{port}/graph?g0.expr=" in out
    assert status == (-signal.SIGKILL if sig == signal.SIGKILL else 0), out
    assert gone(pids), f"prometheus {pids} outlived the monitor ({sig.name})"


@needs_prometheus
def test_monitor_names_a_taken_port(tmp_path):
    run_dir = tmp_path / "run"
    fake_session(run_dir, tmp_path / "fw-ray", discovery=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monitor_process = MonitorProcess(run_dir, port)
        monitor_process.proc.wait(60)  # it exits by itself
        status = monitor_process.stop()
    assert status == 1
    assert f"monitor: 127.0.0.1:{port} is taken" in monitor_process.output()
    assert not prometheus_pids(run_dir / "prometheus" / "prometheus.yml")


# ---------------------------------------------------------------- end to end with Ray


def query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(promql)}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for_series(port: int, promql: str, timeout_s: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = query(port, promql)
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"{promql}: nothing in Prometheus after {timeout_s} s")


class FakeShard:
    """A Ray actor whose stats() a real Reporter reads each second: 10 more inserts per reading
    (so at most 10 per second) and 7 trajectories held."""

    def __init__(self):
        from launch.metrics import Reporter

        self.inserts = 0
        self.reporter = Reporter("shard", 0, self.stats, every_s=1).start()

    def stats(self) -> dict:
        self.inserts += 10
        return {"inserts": self.inserts, "size_trajectories": 7}

    def reports(self) -> int:
        return self.reporter.reports


@pytest.fixture(params=[False, True], ids=["no-dashboard", "dashboard"])
def ray_run(request, tmp_path):
    """A run dir whose `ray` links to a live local Ray session (short temp dir: socket paths), with
    or without the dashboard (on a free port, never 8265): with it Ray writes the discovery file."""
    import ray

    temp_dir = tempfile.mkdtemp(dir="/tmp", prefix="fwm-")
    dashboard = {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": free_port()} \
        if request.param else {"include_dashboard": False}
    ctx = ray.init(num_cpus=1, _temp_dir=temp_dir, log_to_driver=False,
                   runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}}, **dashboard)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "ray").symlink_to(temp_dir)
    try:
        yield run_dir, Path(ctx.address_info["session_dir"]), request.param
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@needs_prometheus
def test_monitor_scrapes_a_ray_actors_metrics(ray_run):
    import ray

    run_dir, session, dashboard = ray_run
    shard = ray.remote(num_cpus=0)(FakeShard).remote()
    assert ray.get(shard.reports.remote(), timeout=120) >= 0
    ray_discovery = session / monitor.RAY_DISCOVERY
    deadline = time.monotonic() + 30
    while dashboard and not ray_discovery.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray_discovery.exists() == dashboard  # only Ray's dashboard writes it
    port, pids = free_port(), []
    monitor_process = MonitorProcess(run_dir, port, scrape_s=1)
    config = run_dir / "prometheus" / "prometheus.yml"
    try:
        monitor_process.wait_announced()
        pids = prometheus_pids(config)
        assert len(pids) == 1
        expected = ray_discovery if dashboard else run_dir / "prometheus" / "targets.json"
        assert scrape_job(config)["file_sd_configs"] == [{"files": [str(expected)]}]

        (size,) = wait_for_series(port, "ray_flywheel_shard_size_trajectories")
        assert size["metric"]["component"] == "shard" and size["metric"]["index"] == "0"
        assert float(size["value"][1]) == 7.0
        (rate,) = wait_for_series(port, "ray_flywheel_shard_inserts_per_s")
        assert rate["metric"]["index"] == "0"
        assert 3.0 <= float(rate["value"][1]) <= 10.0 + 1e-9  # 10 inserts per reading, readings >= 1 s apart
    finally:
        status = monitor_process.stop(signal.SIGTERM)
    assert status == 0, monitor_process.output()
    assert gone(pids), f"prometheus {pids} outlived the monitor"
