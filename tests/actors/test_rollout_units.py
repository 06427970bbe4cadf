"""The pure parts of a rollout actor: staleness gate, task sampling, prompt history, slot metrics."""

import collections

import pytest

from actors.episode import Round, render_prompt
from actors.slot_metrics import SlotMetrics
from actors.staleness import StalenessGate
from actors.task_sampler import TaskSampler

# ---- staleness ----------------------------------------------------------------------------


def test_gate_off_admits_anything():
    gate = StalenessGate(None)
    gate.announce(100, now=0.0)
    assert gate.admits(0, now=1.0)


def test_gate_closes_when_the_engine_falls_behind_and_opens_with_new_weights():
    gate = StalenessGate(2)
    gate.announce(0, now=0.0)
    assert gate.admits(0, now=0.0)
    gate.announce(3, now=100.0)  # slow learner: lag stays 0
    assert gate.expected_age(0, now=100.0) == 3 and not gate.admits(0, now=100.0)
    assert gate.admits(1, now=100.0)  # 3 - 1 = 2 <= 2


def test_gate_counts_versions_the_learner_makes_while_an_episode_runs():
    gate = StalenessGate(1)
    gate.announce(0, now=0.0)
    gate.announce(10, now=1.0)  # 10 versions/s
    gate.episode_finished(0.35)  # -> 3 versions pass during an episode
    assert gate.lag(now=1.0) == 3
    assert gate.expected_age(10, now=1.0) == 3 and not gate.admits(10, now=1.0)
    # A learner that went quiet is not assumed fast: after 2 s, at most 0.5 versions/s.
    assert gate.lag(now=3.0) == 0 and gate.admits(10, now=3.0)


def test_learner_version_never_goes_back():
    gate = StalenessGate(0)
    gate.announce(5, now=0.0)
    gate.announce(2, now=1.0)
    assert gate.learner_version == 5


# ---- tasks --------------------------------------------------------------------------------


def test_task_choice_is_a_function_of_the_seed():
    sampler = TaskSampler("click-button", ["click-button", "click-link", "click-dialog"])
    picks = [sampler.task(seed) for seed in range(300)]
    assert picks == [sampler.task(seed) for seed in range(300)]
    assert set(picks) == {"click-button", "click-link", "click-dialog"}


def test_weighted_tasks():
    sampler = TaskSampler("x", {"click-button": 9.0, "click-link": 1.0, "click-dialog": 0.0})
    counts = collections.Counter(sampler.task(seed) for seed in range(2000))
    assert counts["click-dialog"] == 0
    assert counts["click-button"] > 5 * counts["click-link"] > 0


def test_default_task_and_per_task_max_steps():
    sampler = TaskSampler("click-button", None, max_steps=10, max_steps_by_task={"enter-text": 20})
    assert sampler.task(7) == "click-button"
    assert sampler.steps_for("click-button") == 10 and sampler.steps_for("enter-text") == 20


def test_bad_weights_are_refused():
    for weights in ({"a": 0.0}, {"a": 1.0, "b": -0.5}):
        with pytest.raises(ValueError, match="task weights must be >= 0 with a positive sum"):
            TaskSampler("x", weights)


# ---- prompt history -----------------------------------------------------------------------

ROUNDS = [Round(f"obs{i}", f"act{i}", "no element" if i == 2 else None) for i in range(1, 6)]


def test_history_of_actions_only():
    assert render_prompt("now", [], history=2) == "now"
    assert render_prompt("now", ROUNDS, history=2) == "now\nPrevious actions:\nact4\nact5"
    assert render_prompt("now", ROUNDS, history=0) == "now"


def test_window_keeps_last_rounds_whole_and_summarizes_older():
    text = render_prompt("now", ROUNDS, history=-1, window=2)
    assert text == ("now\nPrevious actions:\nact1\nact2 -> error: no element\nact3\n"
                    "Last rounds:\nRound 4:\nobs4\nAction: act4\nRound 5:\nobs5\nAction: act5")
    capped = render_prompt("now", ROUNDS, history=1, window=2)
    assert "act1" not in capped and "act2" not in capped and "\nact3\n" in capped
    assert render_prompt("now", ROUNDS[:1], history=-1, window=4) == "now\nLast rounds:\nRound 1:\nobs1\nAction: act1"


# ---- slot metrics -------------------------------------------------------------------------


def test_slot_seconds_integrate_the_previous_counts():
    m = SlotMetrics("a")
    m._since = 0.0
    m.observe({"generating": 2, "idle": 1}, now=1.0)  # counts before were all 0
    m.observe({"waiting_page": 3}, now=3.0)
    assert m.slot_seconds == {"generating": 4.0, "waiting_page": 0.0, "idle": 2.0}
    assert m.counts == {"generating": 0, "waiting_page": 3, "idle": 0}
