"""What every env is: the `Env` protocol, its `Observation`, and the `EnvBackend` an actor holds
for an env kind. Light on purpose: no browser here.

An Env is one episode slot's view of a task (async; its coroutines run on the backend's thread):
`await open()` once, then `reset(seed, task, max_steps) -> Observation` and
`step(action_text) -> (Observation, reward, done, info)`, and `close()`.
- The action is the policy's text in the action language of actors/env/actions.py, parsed by
  `parse_action(text, backend.ref_mode)` (the same language the grammar constraint decodes).
  An unparsable or impossible action is an error observation and `info["error"]`, never an
  exception.
- `info["success"]` is the task's own check once the episode is done; `info["raw_reward"]` the
  env's own reward (the reward functions' `env_reward`); `info["outcome"]`, when present,
  overrides the correct / incorrect that success implies.
- Every step counts toward `max_steps`; reaching it ends the episode (done, success False).
- The Observation: the task text, the interactive elements with their refs (set-of-marks), the
  text the policy reads, the actions valid on the page (for the choice constraint), and an
  optional screenshot (PNG bytes) with its sha256.

An EnvBackend is created once per actor from the env's config (`cls(config)`), holds whatever
host resource the env needs for the actor's lifetime (MiniWoB++: one Chromium; an HTTP pool:
nothing), makes the slots' envs (`new_env(task)`) and runs their coroutines (`submit`). Its
class checks task names without creating anything (`check_task`), so a bad task fails when the
actor is built.

NOT guaranteed: an env survives its host (EnvSlot, actors/env/slot.py, turns an env's failure,
any of `backend.errors` or a hang, into a failed episode and rebuilds the env); the order in
which coroutines of different slots run.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Element:
    ref: int  # the env's ref: stable within an episode (MiniWoB's text nodes get negative, unstable refs)
    tag: str  # display tag: button, link, textbox, checkbox, radio, select, label or text
    text: str  # visible text (or aria-label / title / placeholder); "" if none
    clickable: bool
    typeable: bool
    box: tuple[float, float, float, float]  # left, top, width, height in viewport px
    value: str | bool | None = None  # input value; checked state for checkbox / radio


@dataclass
class Observation:
    task: str  # the task utterance
    elements: list[Element]
    text: str  # what the policy sees
    allowed_actions: list[str] = field(default_factory=list)
    screenshot_hash: str | None = None  # sha256 of `screenshot`, when screenshots are on
    screenshot: bytes | None = field(default=None, repr=False, compare=False)  # PNG


class Env(Protocol):
    async def open(self) -> None:
        """Get the env's page (or remote instance) ready; raises if it cannot."""

    async def reset(self, seed: int, task: str, max_steps: int) -> Observation:
        """Start the episode `seed` of `task`, at most `max_steps` steps."""

    async def step(self, action: str) -> tuple[Observation, float, bool, dict]:
        """Carry out the action text: (observation, reward, done, info) as described above."""

    async def close(self) -> None:
        """Release the env (best effort: its host may already be gone)."""


class EnvBackend(Protocol):
    ref_mode: str  # how actions name elements ("text" or "id", actors/env/actions.py)
    errors: tuple[type[BaseException], ...]  # what an env raises when its host failed (not a bug)

    @classmethod
    def check_task(cls, task: str) -> None:
        """Raise ValueError if `task` is not one of this env's tasks (creates nothing)."""

    @property
    def closed(self) -> bool: ...

    def new_env(self, task: str) -> Env:
        """A new env for one slot, on `task`, not yet opened."""

    def submit(self, coro: Coroutine) -> concurrent.futures.Future:
        """Run an env coroutine on the backend's thread, from any thread."""

    def host_of(self, env: Env) -> Any:
        """Which incarnation of the shared host `env` lives on (None: none yet, or no host)."""

    async def replace_host(self, host: Any) -> None:
        """Replace the shared host if it is still incarnation `host` (None: whichever is
        current), so several slots reporting one bad host replace it once. No host: nothing."""

    def stats(self) -> dict[str, int]:
        """Counters for the actor's stats (e.g. browser_relaunches)."""

    def close(self) -> None:
        """Stop everything the backend started; idempotent."""
