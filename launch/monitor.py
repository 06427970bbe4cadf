"""`make monitor`: a Prometheus that scrapes one run's Ray metrics, in the foreground.

    python launch/monitor.py [--run-dir runs/<time>] [--port 9090] [--host 127.0.0.1] [--scrape-s 5]

Contract:
- The run is `--run-dir`, by default the newest directory under runs/ holding a Ray session
  (`<run_dir>/ray/session_latest`; `<run_dir>/ray` may be a link to /tmp/fw-ray-*, see
  launch/cluster.py). The session is that link resolved.
- Targets: Ray's service-discovery file `<session>/prom_metrics_service_discovery.json`, every
  live node's metrics endpoint, which the Ray dashboard rewrites every 5 s. A run without the
  dashboard (`cluster.dashboard=false`) has no such file; then the monitor writes
  `<run_dir>/prometheus/targets.json` with this machine's node (the session's
  `metrics_export_port_*` files, at 127.0.0.1) and points Prometheus at that.
- It writes `<run_dir>/prometheus/prometheus.yml` (one scrape job `ray`, `file_sd_configs`, every
  `--scrape-s` seconds), keeps the TSDB in `<run_dir>/prometheus/data` (a later monitor of the
  same run continues it; two at once cannot share it), and runs /usr/bin/prometheus (or
  `prometheus` on PATH) until Ctrl-C or SIGTERM, then stops it. Prometheus also gets SIGTERM when
  this process dies (PR_SET_PDEATHSIG), so it never outlives the monitor.
- It prints the Prometheus URL and an example query once Prometheus is ready. Every Flywheel series
  is `ray_flywheel_<component>_<metric>` (launch/metrics.py), tagged `component` and `index`.
- The Ray dashboard looks for Prometheus at RAY_PROMETHEUS_HOST (default http://localhost:9090,
  read when the dashboard starts), so on the default port it finds this one (its Prometheus health
  check passes). The charts of its Metrics tab and overview are Grafana panels: they show only
  once a Grafana (RAY_GRAFANA_HOST, default http://localhost:3000) also runs with this Prometheus as
  data source, and they are Ray's own charts; Flywheel's series are in the Grafana dashboard
  docs/grafana/flywheel.json (launch/grafana.py) and at the Prometheus URL.
- Exit status: Prometheus's own status when it stops by itself, 0 after Ctrl-C/SIGTERM, 1 with a
  message naming what is wrong (no run, no session, no Prometheus, port taken, not ready in time).

NOT guaranteed: data from before the monitor started (Ray keeps no history: start it during the
run); the other nodes of a multi-node run without the dashboard (the fallback sees this machine
only); a run that joined a cluster (`cluster.address`) has its session on the head node, not in
its run dir; a restarted Ray node that changes ports while the monitor uses the fallback file; a
monitor started before the dashboard has written its file (the first seconds of a run) uses the
fallback for as long as it runs.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY_DISCOVERY = "prom_metrics_service_discovery.json"
EXAMPLE_QUERY = "ray_flywheel_actor_episodes_per_s"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class MonitorError(Exception):
    """What is wrong, in words; printed as `monitor: <message>` with exit status 1."""


def session_of(run_dir: Path) -> Path:
    """The run's Ray session directory (`<run_dir>/ray/session_latest` resolved)."""
    if not run_dir.is_dir():
        raise MonitorError(f"run dir {run_dir} does not exist")
    link = run_dir / "ray" / "session_latest"
    if not link.is_symlink() and not link.exists():
        raise MonitorError(f"{run_dir} has no Ray session ({link} is missing): not a run dir, or a run "
                           "that joined a cluster (cluster.address), whose session is on the head node")
    session = link.resolve()
    if not session.is_dir():
        raise MonitorError(f"{link} points at {session}, which is gone (was /tmp cleared?)")
    return session


def newest_run(runs: Path) -> Path:
    """The directory under `runs` whose Ray session started last."""
    found = []
    for run_dir in runs.iterdir() if runs.is_dir() else ():
        try:
            found.append((session_of(run_dir).stat().st_mtime, run_dir))
        except MonitorError:
            continue
    if not found:
        raise MonitorError(f"no run under {runs} has a Ray session (<run>/ray/session_latest); "
                           "start one (make webgym) or pass --run-dir")
    return max(found)[1]


def node_targets(session: Path) -> list[str]:
    """This machine's metrics endpoints, from the session's `metrics_export_port_<node>` files."""
    ports = sorted({p.read_text().strip() for p in session.glob("metrics_export_port_*")})
    if not ports:
        raise MonitorError(f"{session} names no metrics endpoint (no metrics_export_port_* file)")
    return [f"127.0.0.1:{port}" for port in ports]


def discovery_file(session: Path, out: Path) -> Path:
    """Ray's service-discovery file when the session has one (the dashboard writes it), else
    `out/targets.json` written from the session's own files."""
    ray_file = session / RAY_DISCOVERY
    if ray_file.exists():
        return ray_file
    ours = out / "targets.json"
    ours.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": node_targets(session)}]) + "\n")
    return ours


def config_text(discovery: Path, scrape_s: float) -> str:
    """prometheus.yml: one job scraping every target listed in `discovery` (JSON strings are YAML)."""
    every = f"{scrape_s:.0f}s" if scrape_s == int(scrape_s) else f"{scrape_s * 1000:.0f}ms"
    return (f"global:\n  scrape_interval: {every}\n  evaluation_interval: {every}\n"
            "scrape_configs:\n  - job_name: ray\n    file_sd_configs:\n"
            f"      - files: [{json.dumps(str(discovery))}]\n")


def write_config(run_dir: Path, scrape_s: float = 5.0) -> Path:
    """Write `<run_dir>/prometheus/prometheus.yml` for the run's session; returns its path."""
    session = session_of(run_dir)
    out = run_dir / "prometheus"
    (out / "data").mkdir(parents=True, exist_ok=True)
    config = out / "prometheus.yml"
    config.write_text(config_text(discovery_file(session, out), scrape_s))
    return config


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if not found:
        raise MonitorError("prometheus is not installed: run `make monitor` as root, "
                           "or `sudo apt-get install -y prometheus`")
    return found


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise MonitorError(f"{host}:{port} is taken ({e.strerror}): another Prometheus (Debian's "
                               "service: `systemctl stop prometheus`)? Or pass --port; the Ray "
                               "dashboard then needs RAY_PROMETHEUS_HOST set before the run starts") from None


def command(binary: str, config: Path, host: str, port: int) -> list[str]:
    return [binary, f"--config.file={config}", f"--storage.tsdb.path={config.parent / 'data'}",
            f"--web.listen-address={host}:{port}", "--log.level=warn"]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the monitor dies (Linux PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def wait_ready(proc: subprocess.Popen, url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MonitorError(f"prometheus exited with status {proc.returncode} before it was ready "
                               "(its log is above)")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise MonitorError(f"prometheus was not ready at {url} after {timeout_s:g} s")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; returns once it is gone."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def announce(url: str, config: Path, run_dir: Path) -> None:
    link = f"{url}/graph?g0.expr={urllib.parse.quote(EXAMPLE_QUERY)}&g0.tab=0"
    print(f"Prometheus: {url} (run {run_dir}; config {config}). Ctrl-C stops it.", flush=True)
    print(f"Example query: {EXAMPLE_QUERY}  ->  {link}", flush=True)


def serve(run_dir: Path, host: str, port: int, scrape_s: float) -> int:
    """Run Prometheus for `run_dir` until it stops or we are told to stop; its exit status."""
    binary = prometheus_binary()
    config = write_config(run_dir, scrape_s)
    check_port_free(host, port)
    signal.signal(signal.SIGTERM, _interrupt)
    proc = None
    try:
        # preexec_fn is unsafe only with threads, and the monitor starts none.
        proc = subprocess.Popen(command(binary, config, host, port), preexec_fn=_die_with_parent)  # noqa: PLW1509
        url = f"http://{host}:{port}"
        wait_ready(proc, url)
        announce(url, config, run_dir)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc is not None:
            stop(proc)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Prometheus for one Flywheel run's Ray metrics (foreground).")
    parser.add_argument("--run-dir", type=Path, help="the run (default: the newest under runs/ with a Ray session)")
    parser.add_argument("--port", type=int, default=9090, help="9090: where the Ray dashboard looks by default")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--scrape-s", type=float, default=5.0, help="seconds between two scrapes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        run_dir = (args.run_dir or newest_run(ROOT / "runs")).absolute()
        return serve(run_dir, args.host, args.port, args.scrape_s)
    except MonitorError as e:
        print(f"monitor: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
