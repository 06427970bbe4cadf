"""launch/metrics.py on hand-worked readings: gauges as read, counters as rates (a counter that
went down starts a new baseline), tagged series from dicts and from `<key>_<label>` keys, and the
watched class that keeps its name and reports on its own."""

import threading

import pytest

from launch.metrics import SERIES, Reporter, metric_name, watched


def values(reporter, stats, now):
    return {k: v for k, v in reporter.values(stats, now).items()}


def test_gauges_are_read_as_they_are_and_absent_or_none_sets_nothing():
    r = Reporter("learner", 0, dict)
    got = values(r, {"loss": 0.25, "step": 7, "mfu": None, "rank": 0}, now=0.0)
    assert got[("flywheel_learner_loss", None)] == 0.25
    assert got[("flywheel_learner_step", None)] == 7.0
    assert ("flywheel_learner_mfu", None) not in got  # None: no GPU, nothing set
    assert ("flywheel_learner_grad_norm", None) not in got  # absent before the first step


def test_a_counter_becomes_a_rate_and_a_restart_starts_a_new_baseline():
    r = Reporter("actor", 3, dict)
    name = ("flywheel_actor_episodes_per_s", None)
    assert name not in values(r, {"episodes": 10}, now=100.0)  # the first reading is only a baseline
    assert values(r, {"episodes": 20}, now=105.0)[name] == 2.0  # (20 - 10) / 5 s
    assert values(r, {"episodes": 3}, now=110.0)[name] == 0.0  # restarted: never a negative rate
    assert values(r, {"episodes": 8}, now=112.5)[name] == 2.0  # (8 - 3) / 2.5 s


def test_tagged_series_from_label_keys_and_from_dicts():
    r = Reporter("actor", 0, dict)
    stats = {"slots_generating": 3, "slots_waiting_page": 1, "slots_idle": 0,
             "success_by_task": {"click-button": 0.75, "click-link": 0.5}, "time_engine_s": 4.0,
             "time_browser_s": 1.0}
    got = values(r, stats, now=0.0)
    assert {t: v for (n, t), v in got.items() if n == "flywheel_actor_slots"} == {
        "generating": 3.0, "waiting_page": 1.0, "idle": 0.0}
    assert {t: v for (n, t), v in got.items() if n == "flywheel_actor_success"} == {
        "click-button": 0.75, "click-link": 0.5}
    got = values(r, {**stats, "time_engine_s": 7.0, "time_browser_s": 1.5}, now=4.0)
    shares = {t: v for (n, t), v in got.items() if n == "flywheel_actor_time_share"}
    assert shares == {"engine": 0.75, "browser": 0.125}  # (7 - 4) / 4 s and (1.5 - 1) / 4 s


def test_a_shards_nested_durability_and_filter_reasons_are_read():
    r = Reporter("shard", 1, dict)
    stats = {"filtered": {"success_only": 4, "min_steps": 1}, "durability": {"snapshots": 2, "log_records": 10}}
    got = values(r, stats, now=0.0)
    assert got[("flywheel_shard_filtered", "success_only")] == 4.0
    assert got[("flywheel_shard_filtered", "min_steps")] == 1.0
    assert got[("flywheel_shard_snapshots", None)] == 2.0
    got = values(r, {**stats, "durability": {"snapshots": 2, "log_records": 40}}, now=10.0)
    assert got[("flywheel_shard_log_records_per_s", None)] == 3.0  # (40 - 10) / 10 s


def test_every_series_has_a_unique_valid_name_and_an_unknown_component_is_refused():
    names = [metric_name(c, s) for c, series in SERIES.items() for s in series]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert all(n.replace("_", "").isalnum() and n.startswith("flywheel_") for n in names)
    with pytest.raises(ValueError, match="unknown component 'judge'"):
        Reporter("judge", 0, dict)


class Counter:
    """Counts its stats() calls; the reporter thread is the only caller. Its stats name no series:
    a gauge set here, in the test process, would be exported by whatever Ray this process joins
    later (tests/system/test_monitor.py counts the series it finds)."""

    def __init__(self, start: int):
        self.calls = 0
        self.start = start
        self.reported = threading.Event()

    def stats(self) -> dict:
        self.calls += 1
        if self.calls >= 2:
            self.reported.set()
        return {"calls": self.start + self.calls}


def test_a_watched_class_keeps_its_name_and_reports_on_its_own():
    cls = watched(Counter, "shard", 2, every_s=0.01)
    assert cls.__name__ == "Counter" and cls.__qualname__ == "Counter" and issubclass(cls, Counter)
    obj = cls(start=100)
    try:
        assert obj.reported.wait(10), "the reporter thread never read stats()"
        assert obj._metrics_reporter.index == "2" and obj._metrics_reporter.reports >= 1
    finally:
        obj._metrics_reporter.close()
