"""Every component's figures as Ray metrics (`ray.util.metrics`), set in the component's own
process, so the dashboard and Prometheus see them as long as the component lives.

Each long-lived component (rollout actor, replay shard, learner rank) already answers `stats()`.
`watched(cls, component, index)` is `cls` with a `Reporter` started after its constructor: a
daemon thread that reads `stats()` every `every_s` seconds and sets one gauge per declared series,
named `flywheel_<component>_<name>` (Prometheus adds Ray's `ray_` prefix) and tagged
`{component, index}`:

- a `gauge` series is the stats value as it is;
- a `rate` series is a counter's increase per second between two reports (`<name>_per_s`);
  a counter that went down (a restarted component) starts a new baseline, never a negative rate;
- a series with `by` reads a dict (`{"success_only": 3}`) or the keys `<key>_<label>` and sets
  one gauge per entry, with the entry in tag `by`.

Every gauge is set again at each report even when its value did not change, because Ray drops a
gauge ~30 s after its last set. `SERIES` is the one list of what is exported: the Grafana
dashboard (launch/grafana.py) and the tests read it.

NOT guaranteed: a value between two reports; the first rate appears one report after start; a
stats key absent or None (e.g. `mfu` without a GPU) sets nothing; outside a Ray worker the gauges
record nowhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Series:
    """One exported figure: `key` in the component's stats(), exported as `name` (key by default)."""

    key: str
    description: str
    kind: str = "gauge"  # "gauge" | "rate" (a counter: exported as <name>_per_s)
    by: str | None = None  # a dict-valued key, or `keys` read as <key>_<k>; the entry goes in tag `by`
    keys: tuple[str, ...] = ()
    unit: str = ""
    name: str = ""  # the exported name, when not derived from the key

    @property
    def metric(self) -> str:
        """`name` as given; else the key, with `_per_s` for a rate."""
        if self.name:
            return self.name
        return f"{self.key}_per_s" if self.kind == "rate" else self.key


ACTOR = (
    Series("episodes", "finished episodes per second", "rate", unit="episodes/s"),
    Series("steps", "environment steps per second", "rate", name="env_steps_per_s", unit="steps/s"),
    Series("tokens", "generated tokens per second", "rate", unit="tokens/s"),
    Series("episodes_started", "episodes started per second", "rate", unit="episodes/s"),
    Series("time", "seconds per second spent in each part of the loop (engine, browser, wait)", "rate",
           by="part", keys=("engine", "engine_cpu", "browser", "wait"), name="time_share", unit="s/s"),
    Series("slots", "rollout slots by state", by="state", keys=("generating", "waiting_page", "idle")),
    Series("success_by_task", "success over each task's last 100 episodes", by="task", name="success"),
    Series("episodes_by_task", "finished episodes per task", by="task", name="task_episodes"),
    Series("policy_version", "weight version the engine serves"),
    Series("staleness_lag", "learner version minus served version", unit="versions"),
    Series("gate_closed", "episodes held back by the staleness gate"),
    Series("weight_updates", "weight syncs received"),
    Series("browser_relaunches", "browsers relaunched after a failure"),
    Series("env_failures", "episodes ended by an environment failure"),
    Series("prompts_trimmed", "prompts whose oldest rounds were dropped to fit the context"),
    Series("acked", "trajectories acknowledged by the replay, by status", by="status",
           keys=("stored", "filtered", "rejected")),
    Series("restarted", "1 after Ray restarted this actor"),
)

SHARD = (
    Series("inserts", "trajectories received per second", "rate", unit="trajectories/s"),
    Series("samples", "items sampled per second", "rate", unit="items/s"),
    Series("stored", "trajectories stored per second", "rate", unit="trajectories/s"),
    Series("size_trajectories", "trajectories held"),
    Series("size_steps", "steps held"),
    Series("capacity", "capacity in steps"),
    Series("priority_mass", "sum of sampling weights"),
    Series("mean_staleness", "mean staleness of sampled items", unit="versions"),
    Series("last_staleness", "staleness of the last sample", unit="versions"),
    Series("policy_version", "newest policy version seen"),
    Series("filtered", "trajectories dropped at insert, by filter", by="reason"),
    Series("rejected", "frames rejected, by reason", by="reason"),
    Series("evicted", "items evicted at capacity"),
    Series("duplicates", "duplicate inserts answered without storing"),
    Series("blocked_inserts", "inserts held back by the rate limiter"),
    Series("blocked_samples", "samples held back by the rate limiter"),
    Series("priority_updates", "priority updates applied"),
    Series("restored_trajectories", "trajectories restored at start"),
    Series("log_records", "durable log records appended per second", "rate", unit="records/s"),
    Series("log_syncs", "durable log fsyncs per second", "rate", unit="fsyncs/s"),
    Series("snapshots", "snapshots completed"),
    Series("snapshot_last_s", "duration of the last snapshot", unit="s"),
)

LEARNER = (
    Series("step", "optimizer steps per second", "rate", name="steps_per_s", unit="steps/s"),
    Series("tokens", "trained tokens per second (whole run)", "rate", name="trained_tokens_per_s", unit="tokens/s"),
    Series("sampled", "replay items drawn per second", "rate", unit="items/s"),
    Series("time", "seconds per second spent waiting for the replay, drawing, training, syncing", "rate",
           by="part", keys=("wait", "draw", "train", "sync"), name="time_share", unit="s/s"),
    Series("step", "optimizer step"),
    Series("loss", "training loss of the last step"),
    Series("lr", "learning rate"),
    Series("grad_norm", "gradient norm of the last step"),
    Series("step_s", "duration of the last step", unit="s"),
    Series("tokens_per_s", "tokens per second in the last step", unit="tokens/s"),
    Series("samples_per_s", "items per second in the last step", unit="items/s"),
    Series("staleness", "policy version minus the versions that made the last batch", unit="versions"),
    Series("policy_version", "policy version"),
    Series("weight_syncs", "weight syncs sent"),
    Series("sync_s", "duration of the last weight sync", unit="s"),
    Series("sync_bytes", "bytes of the last weight sync", unit="bytes"),
    Series("weight_plane_rebuilds", "weight groups rebuilt after an actor restart"),
    Series("waits_rate_limit", "decisions to wait for the samples-per-insert limiter"),
    Series("mfu", "model FLOPs utilisation"),
    Series("kl", "KL to the reference policy"),
    Series("entropy", "policy entropy"),
    Series("clip_fraction", "share of clipped ratios"),
)

SERIES: dict[str, tuple[Series, ...]] = {"actor": ACTOR, "shard": SHARD, "learner": LEARNER}


def metric_name(component: str, series: Series) -> str:
    return f"flywheel_{component}_{series.metric}"


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def _entries(series: Series, stats: Mapping) -> dict[str | None, float]:
    """The figures of one series in `stats`: {tag value (None when untagged): number}."""
    if series.by is None:
        value = _number(stats.get(series.key))
        return {} if value is None else {None: value}
    if series.keys:
        found = {k: _number(stats.get(f"{series.key}_{k}", stats.get(f"{series.key}_{k}_s"))) for k in series.keys}
    else:
        found = {str(k): _number(v) for k, v in (stats.get(series.key) or {}).items()}
    return {k: v for k, v in found.items() if v is not None}


def flatten(stats: Mapping) -> dict:
    """stats() with one level of nested dicts that are not series of their own (a shard's
    `durability`) lifted to the top."""
    out = dict(stats)
    for key in ("durability", "limiter"):
        if isinstance(stats.get(key), Mapping):
            out.update({k: v for k, v in stats[key].items() if k not in out})
    return out


class Reporter:
    """Sets the gauges of one component from its stats() every `every_s` seconds (see module)."""

    def __init__(self, component: str, index: int, stats: Callable[[], Mapping], every_s: float = 5.0):
        if component not in SERIES:
            raise ValueError(f"metrics: unknown component {component!r}; known: {sorted(SERIES)}")
        self.component, self.index, self.every_s, self._stats = component, str(index), every_s, stats
        self._gauges: dict[str, object] = {}
        self._last: dict[tuple[str, str | None], tuple[float, float]] = {}  # (key, tag) -> (t, counter)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reports = 0

    def values(self, stats: Mapping, now: float) -> dict[tuple[str, str | None], float]:
        """{(metric name, tag value): value} for one stats() reading at time `now`."""
        stats = flatten(stats)
        out = {}
        for series in SERIES[self.component]:
            name = metric_name(self.component, series)
            for tag, value in _entries(series, stats).items():
                if series.kind == "gauge":
                    out[name, tag] = value
                    continue
                prev = self._last.get((series.key, tag))
                self._last[series.key, tag] = (now, value)
                if prev is not None and now > prev[0]:
                    out[name, tag] = max(value - prev[1], 0.0) / (now - prev[0])
        return out

    def report_once(self, now: float | None = None) -> dict[tuple[str, str | None], float]:
        values = self.values(self._stats(), time.monotonic() if now is None else now)
        for (name, tag), value in values.items():
            tags = {"component": self.component, "index": self.index}
            series = self._series(name)
            if series.by is not None:
                tags[series.by] = tag
            self._gauge(name, series).set(value, tags=tags)
        self.reports += 1
        return values

    def _series(self, name: str) -> Series:
        return next(s for s in SERIES[self.component] if metric_name(self.component, s) == name)

    def _gauge(self, name: str, series: Series):
        if name not in self._gauges:
            from ray.util.metrics import Gauge

            keys = ("component", "index") + ((series.by,) if series.by else ())
            self._gauges[name] = Gauge(name, description=series.description, tag_keys=keys)
        return self._gauges[name]

    def start(self) -> Reporter:
        self._thread = threading.Thread(target=self._loop, name=f"metrics-{self.component}-{self.index}",
                                        daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        failed = False
        while not self._stop.wait(self.every_s):
            try:
                self.report_once()
                failed = False
            except Exception:  # a stats() racing a mutation, a component mid-restart: next tick
                if not failed:
                    log.exception("metrics: %s-%s could not report", self.component, self.index)
                failed = True

    def close(self) -> None:
        self._stop.set()


def watched(cls: type, component: str, index: int, every_s: float = 5.0) -> type:
    """`cls` whose instances start a Reporter on their own stats() once constructed (again after
    Ray restarts one). The class keeps its name, so the dashboard lists it as itself."""

    class Watched(cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._metrics_reporter = Reporter(component, index, self.stats, every_s).start()

    Watched.__name__, Watched.__qualname__, Watched.__doc__ = cls.__name__, cls.__qualname__, cls.__doc__
    Watched.__module__ = cls.__module__
    return Watched
