"""RolloutLoop scheduling with a scripted engine and scripted pages (no vLLM, no Chromium): slots
overlap, steps carry the version that generated them, failures end episodes as unknown."""

import asyncio
import dataclasses
import threading

import pytest

from actors.config import RolloutConfig
from actors.engine.base import Generation
from actors.env.observation import Element, make_observation
from actors.env.slot import EnvResult
from actors.rollout_loop import RolloutLoop
from actors.slot_metrics import SlotMetrics
from actors.task_sampler import TaskSampler

ROLLOUT = RolloutConfig(history=2, history_window=0, constraint="choice", temperature=1.0, max_tokens=8)
OBS = make_observation('Click "a".', [Element(1, "button", "a", True, False, (0, 0, 10, 10))], "text")


class ScriptedEngine:
    def __init__(self):
        self.policy_version = 0
        self.max_model_len = 1024
        self.in_flight: list[str] = []
        self.n = 0
        self.iterations = 0

    def chat_prompt_ids(self, text):
        return [1, 2, 3]

    def submit(self, prompt_ids, choice, *, temperature, max_tokens):
        self.n += 1
        self.in_flight.append(f"r{self.n}")
        return f"r{self.n}"

    def step(self):
        self.iterations += 1
        done, self.in_flight = self.in_flight, []
        return [(rid, Generation([5, 6], [-0.5, -0.25], 'click("a")')) for rid in done]


class AsyncioThread:
    """The EnvBackend surface the loop uses: submit a coroutine to a loop thread, closed."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.closed = False

    def submit(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self):
        async def cancel_the_rest():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.submit(cancel_the_rest()).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


class ScriptedSlot:
    """Episodes of `length` steps; a step waits for `gate` when one is set; `fail_at` makes
    that step (1-based, over the slot's life) report a crash."""

    def __init__(self, length=2, gate=None, fail_at=None):
        self.length, self.gate, self.fail_at = length, gate, fail_at
        self.steps = self.total = 0

    async def reset(self, seed, task, max_steps):
        self.steps = 0
        return EnvResult(OBS)

    async def step(self, action):
        if self.gate is not None:
            await self.gate.wait()
        self.steps += 1
        self.total += 1
        if self.total == self.fail_at:
            return EnvResult(None, done=True, failure="crash: Target closed")
        done = self.steps >= self.length
        return EnvResult(OBS, reward=1.0 if done else 0.0, done=done, info={"success": done, "error": None})

    async def close(self):
        pass


@pytest.fixture
def browser():
    b = AsyncioThread()
    yield b
    b.stop()


def make_loop(browser, slots, min_batch=1, constraint="choice", max_model_len=1024):
    finished = []
    engine = ScriptedEngine()
    engine.max_model_len = max_model_len
    loop = RolloutLoop(engine, browser, slots, rollout=dataclasses.replace(ROLLOUT, min_batch=min_batch, constraint=constraint),
                       sampler=TaskSampler("click-button"), finish=lambda ep, info: finished.append((ep, info)),
                       metrics=SlotMetrics("t"), seed_key="t")
    return loop, finished


def tick_until(loop, predicate, what, limit=100_000):
    for _ in range(limit):
        if predicate():
            return
        loop.tick(lambda: True)
    raise AssertionError(f"{what} did not happen in {limit} ticks")


def test_other_slots_generate_while_one_waits_for_its_page(browser):
    gate = asyncio.Event()
    loop, finished = make_loop(browser, [ScriptedSlot(gate=gate), ScriptedSlot(), ScriptedSlot()])
    tick_until(loop, lambda: len(finished) >= 10, "ten episodes of the free slots")
    assert loop.slots[0].state == "waiting_page" and loop.slots[0].env.total == 0
    assert {ep.seed for ep, _ in finished}.isdisjoint({loop.slots[0].episode.seed})
    browser.loop.call_soon_threadsafe(gate.set)
    seed = loop.slots[0].episode.seed
    tick_until(loop, lambda: any(ep.seed == seed for ep, _ in finished), "the held slot's episode")
    episode, info = next((ep, info) for ep, info in finished if ep.seed == seed)
    assert len(episode.steps) == 2 and info["success"]


def test_steps_carry_the_version_that_generated_them(browser):
    loop, finished = make_loop(browser, [ScriptedSlot(length=4)])
    tick_until(loop, lambda: len(loop.slots[0].episode.steps if loop.slots[0].episode else []) >= 2,
               "two steps")
    loop.drain_engine()  # what the actor does before loading weights
    assert loop.engine.in_flight == []
    loop.engine.policy_version = 7
    tick_until(loop, lambda: finished, "the episode's end")
    versions = [s.policy_version for s in finished[0][0].steps]
    assert finished[0][0].policy_version == 0
    assert versions[0] == 0 and versions[-1] == 7 and versions == sorted(versions)


def test_a_failed_step_ends_the_episode_unknown_and_the_slot_goes_on(browser):
    loop, finished = make_loop(browser, [ScriptedSlot(length=3, fail_at=2)])
    tick_until(loop, lambda: len(finished) >= 2, "two episodes")
    (crashed, info), (after, after_info) = finished[:2]
    assert info["outcome"] == "unknown" and not info["success"]
    assert len(crashed.steps) == 2 and crashed.steps[-1].done and crashed.steps[-1].reward == 0.0
    assert after_info["success"] and len(after.steps) == 3
    assert loop.stats["failures_crash"] == 1 and loop.stats["env_failures"] == 1


def test_min_batch_holds_the_engine_for_pages(browser):
    gate = asyncio.Event()
    loop, _ = make_loop(browser, [ScriptedSlot(gate=gate), ScriptedSlot()], min_batch=2)
    tick_until(loop, lambda: loop.slots[0].state == "waiting_page" and loop.slots[1].request is not None,
               "slot 1 queued while slot 0 waits for its page")
    before = loop.engine.iterations
    for _ in range(20):
        loop.tick(lambda: True)
    assert loop.engine.iterations == before  # one request < min_batch, and a page is pending
    browser.loop.call_soon_threadsafe(gate.set)
    tick_until(loop, lambda: loop.engine.iterations > before, "the engine to run again")


def test_hold_stops_requests_and_new_episodes_until_released(browser):
    loop, _ = make_loop(browser, [ScriptedSlot(length=1), ScriptedSlot(length=3)])
    tick_until(loop, lambda: loop.stats["steps"] >= 2, "the first steps")
    loop.drain_engine()
    loop.hold = True  # what the actor does between start and finish of a weight transfer
    submitted = loop.engine.n
    tick_until(loop, lambda: all(s.pending is None for s in loop.slots), "the pages to settle")
    started = loop.stats["episodes_started"]
    for _ in range(20):
        loop.tick(lambda: True)
    assert loop.engine.n == submitted and loop.engine.in_flight == []
    assert loop.stats["episodes_started"] == started
    loop.hold = False
    tick_until(loop, lambda: loop.engine.n > submitted, "requests again")
