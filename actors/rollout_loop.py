"""The scheduling core of a rollout actor: many env slots, one engine, one env backend, overlapped.

Runs on the actor's loop thread, which alone drives the engine (any Engine, actors/engine/base.py).
Page work (reset, step) runs as coroutines on the env backend's thread (`backend.submit`, e.g.
MiniWoB++'s browser thread, actors/env/browser.py) and comes back as futures. Each
`tick()`:
  1. takes the page results that are ready: a step is recorded on its episode; a finished, or
     crashed / timed-out, episode goes to `finish`; a slot with a fresh observation is ready;
  2. starts a new episode on each idle slot, if the caller admits new episodes (staleness gate,
     pause) — the task and max steps come from the TaskSampler, chosen by the episode seed
     (`rollout.group_size` consecutive episodes share a seed: one GRPO group);
  3. submits one engine request per ready slot: its prompt (history rounds trimmed, oldest
     first, to leave max_tokens of room in the engine's context; counted in stats) under its
     constraint (actors/decoding.py: the page's choices, the action grammar, or none);
  4. advances the engine by one iteration if any request is in flight, and sends every finished
     generation to its page as an env step; with nothing in flight it waits (briefly) for a page.
So while some slots wait for their pages the others generate, and a slot whose page answered
joins the engine's running batch at the next iteration (continuous batching). With
`rollout.min_batch` > 1 the engine also waits for pages while fewer requests than that are in
flight and some page is still working: fewer, fuller engine iterations, which costs less CPU
per token when the engine and the browsers share a few cores (see bench/rollout.py).

Every step is tagged with the version of the weights that generated it (the version when its
request was submitted: weights load only after `drain_engine()`, never under a request).

NOT guaranteed: fairness between slots; a step of an episode in progress when the loop stops is
lost with the episode (not sent); page results are taken in completion order, not slot order.
"""

from __future__ import annotations

import collections
import concurrent.futures
import time
import zlib
from dataclasses import dataclass, field

from actors.config import RolloutConfig
from actors.decoding import StepConstraint, constraint_mode
from actors.engine.base import Engine, Generation
from actors.env.base import EnvBackend, Observation
from actors.env.slot import EnvResult, EnvSlot
from actors.episode import Episode, fit_prompt
from actors.slot_metrics import SlotMetrics
from actors.task_sampler import TaskSampler

WAIT_S = 0.05  # longest blocking wait for a page, so queued control calls run promptly


@dataclass
class Slot:
    index: int
    env: EnvSlot
    episode: Episode | None = None
    obs: Observation | None = None  # the observation the next action answers
    pending: concurrent.futures.Future | None = None  # a reset or step on the backend's thread
    request: str | None = None  # engine request in flight
    prompt_ids: list[int] = field(default_factory=list)
    choice: list[str] | None = None  # the allowed actions, under a choice constraint
    constraint: str = "none"  # what the request decodes under: choice | grammar | none
    version: int = 0  # of the weights the request was submitted under
    gen: Generation | None = None  # the generation its page is acting on

    @property
    def state(self) -> str:
        if self.pending is not None:
            return "waiting_page"
        if self.episode is not None:
            return "generating"  # in the engine, or about to be
        return "idle"


class RolloutLoop:
    def __init__(self, engine: Engine, backend: EnvBackend, env_slots: list[EnvSlot], *,
                 rollout: RolloutConfig, sampler: TaskSampler, finish, metrics: SlotMetrics,
                 seed_key: str, ref_mode: str = "text"):
        """`backend`: what runs the slots' coroutines (`submit`, `closed`); `ref_mode`: the
        action language's, for the grammar constraint."""
        self.engine, self.backend = engine, backend
        self.slots = [Slot(i, e) for i, e in enumerate(env_slots)]
        self.rollout, self.sampler, self.finish = rollout, sampler, finish
        self.metrics, self.seed_key = metrics, seed_key
        self.stats: collections.Counter = collections.Counter()
        # Seconds: engine (wall) and engine_cpu (this thread's CPU meanwhile: the gap is time
        # the OS or the GIL gave to others), wait (for pages, nothing in flight), browser (page
        # work on the backend's thread, summed over slots).
        self.times: collections.Counter = collections.Counter()
        self._by_request: dict[str, Slot] = {}
        self.min_batch = int(rollout.min_batch)
        self.constraint = StepConstraint(constraint_mode(rollout), ref_mode)
        # A longer prompt would leave the response no room (vLLM rejects it): fit_prompt trims.
        self.prompt_limit = engine.max_model_len - int(rollout.max_tokens)
        self.hold = False  # set while weights are being replaced: no request, no new episode

    # ---- one iteration -----------------------------------------------------------------------
    def tick(self, admit) -> None:
        """`admit()` -> bool is asked before each new episode."""
        self._harvest()
        for slot in self.slots:
            if slot.episode is None and slot.pending is None and not self.hold and admit():
                self._start(slot)
        for slot in self.slots:
            if slot.obs is not None and slot.pending is None and slot.request is None and not self.hold:
                self._submit(slot)
        self.metrics.observe(self.state_counts())
        in_flight = len(self._by_request)
        if in_flight and (in_flight >= self.min_batch or not self._pages_pending()):
            self._engine_step()
        else:
            self._wait_for_pages()

    def drain_engine(self) -> None:
        """Run the engine until no request is in flight (their pages get their actions)."""
        while self._by_request:
            self._engine_step()

    def state_counts(self) -> dict[str, int]:
        return collections.Counter(s.state for s in self.slots)

    def close(self) -> None:
        if self.backend.closed:
            return
        futures = [self.backend.submit(s.env.close()) for s in self.slots]
        concurrent.futures.wait(futures, timeout=30)

    # ---- steps of a tick ---------------------------------------------------------------------
    def _start(self, slot: Slot) -> None:
        n = self.stats["episodes_started"]
        self.stats["episodes_started"] += 1
        # GRPO: `group_size` consecutive episodes replay one task instance (same seed → same
        # group_id), so the learner can compare their returns.
        seed = zlib.crc32(f"{self.seed_key}:{n // self.rollout.group_size}".encode())
        task = self.sampler.task(seed)
        grammar = self.constraint.grammar.ebnf if self.constraint.grammar else None
        slot.episode = Episode(task=task, seed=seed, policy_version=self.engine.policy_version, grammar=grammar)
        slot.pending = self.backend.submit(slot.env.reset(seed, task, self.sampler.steps_for(task)))

    def _submit(self, slot: Slot) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        fitted = fit_prompt(self.engine.chat_prompt_ids, slot.obs.text, slot.episode.rounds,
                            self.rollout.history, self.rollout.history_window,
                            self.prompt_limit)
        if fitted.rounds_dropped or fitted.truncated:
            self.stats["prompts_trimmed"] += 1
            self.stats["prompt_rounds_trimmed"] += fitted.rounds_dropped
            self.stats["prompts_truncated"] += fitted.truncated
        slot.prompt_ids = fitted.ids
        constraint, slot.constraint = self.constraint.for_page(slot.obs.allowed_actions)
        slot.choice = constraint if slot.constraint == "choice" else None
        slot.version = self.engine.policy_version
        slot.request = self.engine.submit(slot.prompt_ids, constraint,
                                          temperature=self.rollout.temperature,
                                          max_tokens=self.rollout.max_tokens)
        self._by_request[slot.request] = slot
        self.times["engine"] += time.perf_counter() - t0
        self.times["engine_cpu"] += time.thread_time() - c0

    def _engine_step(self) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        finished = self.engine.step()
        self.times["engine"] += time.perf_counter() - t0
        self.times["engine_cpu"] += time.thread_time() - c0
        for rid, gen in finished:
            slot = self._by_request.pop(rid)
            slot.request, slot.gen = None, gen
            self.stats["tokens"] += len(gen.token_ids)
            slot.pending = self.backend.submit(slot.env.step(gen.text))

    def _pages_pending(self) -> bool:
        return any(s.pending is not None for s in self.slots)

    def _wait_for_pages(self) -> None:
        pending = [s.pending for s in self.slots if s.pending is not None]
        t0 = time.perf_counter()
        if pending:
            concurrent.futures.wait(pending, timeout=WAIT_S, return_when=concurrent.futures.FIRST_COMPLETED)
        else:
            time.sleep(WAIT_S / 5)  # nothing to do: every slot idle (paused or gated)
        self.times["wait"] += time.perf_counter() - t0

    def _harvest(self) -> None:
        for slot in self.slots:
            if slot.pending is None or not slot.pending.done():
                continue
            res: EnvResult = slot.pending.result()  # an exception here is a bug: the actor dies
            slot.pending = None
            self.times["browser"] += res.seconds
            if slot.gen is None:
                self._after_reset(slot, res)
            else:
                self._after_step(slot, res)

    def _after_reset(self, slot: Slot, res: EnvResult) -> None:
        if res.failure is None:
            slot.obs = res.obs
            return
        # Nothing was generated yet, so there is no trajectory to send.
        self.stats["episodes_lost_at_reset"] += 1
        self.stats["env_failures"] += 1
        self.stats["failures_" + res.failure.split(":", 1)[0]] += 1
        slot.episode = slot.obs = None

    def _after_step(self, slot: Slot, res: EnvResult) -> None:
        episode, gen = slot.episode, slot.gen
        slot.gen = None
        self.stats["steps"] += 1
        failed = res.failure is not None
        episode.add(observation=slot.obs.text, prompt_ids=slot.prompt_ids, response_ids=gen.token_ids,
                    logprobs=gen.logprobs, action=gen.text, allowed_actions=slot.choice or [],
                    reward=res.reward, done=res.done or failed, policy_version=slot.version,
                    screenshot_hash=slot.obs.screenshot_hash, error=res.info.get("error"),
                    constraint=slot.constraint)
        if failed:
            self.stats["env_failures"] += 1
            self.stats["failures_" + res.failure.split(":", 1)[0]] += 1  # crash | timeout
            self.finish(episode, {"success": False, "outcome": "unknown", "failure": res.failure})
        elif res.done:
            self.finish(episode, res.info)
        else:
            slot.obs = res.obs
            return
        slot.episode = slot.obs = None
