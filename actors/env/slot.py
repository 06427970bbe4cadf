"""EnvSlot: one env slot of a rollout actor, on its env backend's thread, that survives its env.

Drives any Env (actors/env/base.py) through the actor's EnvBackend: the backend makes the envs
(`new_env`), says which exceptions mean the env or its host failed (`errors`), and replaces a
bad shared host (`host_of`, `replace_host`; MiniWoB++: relaunches the browser, once per death).

reset() and step() never raise for an env problem: a crashed env or host (any of the backend's
`errors` reaching them) or a call still unfinished after `hang_timeout_s` comes back as a result
with `failure` set, and the slot is marked broken. The next reset() first rebuilds it: the old
env is closed (best effort; one that does not close in time takes its host with it), and a
fresh env is opened on the task (if that fails, the host is replaced once and it is tried again).

NOT guaranteed: recovery itself can fail (Chromium cannot start); each failed rebuild is
another failure result, with a growing pause before the next try, and after `max_failures`
failures in a row reset() raises — an actor that cannot get a page should stop loudly rather
than spin. Other exceptions (bugs) propagate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from actors.env.base import Env, EnvBackend, Observation

CLOSE_TIMEOUT_S = 5.0
MAX_BACKOFF_S = 10.0


@dataclass
class EnvResult:
    obs: Observation | None
    reward: float = 0.0
    done: bool = False
    info: dict = field(default_factory=dict)
    failure: str | None = None  # why the env could not answer; the episode's outcome is unknown
    seconds: float = 0.0  # time spent on the backend's thread, rebuilds included


class EnvSlot:
    def __init__(self, backend: EnvBackend, *, hang_timeout_s: float, max_failures: int):
        self.backend = backend
        self.hang_timeout_s = hang_timeout_s
        self.max_failures = max_failures
        self.failing = (*backend.errors, TimeoutError)  # what ends an episode as "unknown"
        self.env: Env | None = None
        self._host = None  # the host incarnation the last env lived on (backend.host_of)
        self.failures = 0  # in a row
        self.rebuilds = 0

    async def open(self, task: str) -> None:
        """Load the first page now (else the first reset does); raises if it cannot."""
        if self.env is None:
            await self._rebuild(task)

    async def reset(self, seed: int, task: str, max_steps: int) -> EnvResult:
        t0 = time.perf_counter()
        try:
            if self.env is None:
                await self._rebuild(task)
            obs = await asyncio.wait_for(self.env.reset(seed, task, max_steps), self.hang_timeout_s)
        except self.failing as e:
            return await self._failed(e, t0)
        self.failures = 0
        return EnvResult(obs, seconds=time.perf_counter() - t0)

    async def step(self, action: str) -> EnvResult:
        t0 = time.perf_counter()
        if self.env is None:
            return EnvResult(None, done=True, failure="crash: the slot has no page", seconds=0.0)
        try:
            obs, reward, done, info = await asyncio.wait_for(self.env.step(action), self.hang_timeout_s)
        except self.failing as e:
            return await self._failed(e, t0)
        return EnvResult(obs, reward, done, info, seconds=time.perf_counter() - t0)

    async def close(self) -> None:
        if self.env is not None:
            with contextlib.suppress(*self.failing):
                await asyncio.wait_for(self.env.close(), CLOSE_TIMEOUT_S)
            self.env = None

    async def _failed(self, e: BaseException, t0: float) -> EnvResult:
        self.failures += 1
        if self.failures >= self.max_failures:
            raise RuntimeError(f"env slot failed {self.failures} times in a row; last: {e!r}") from e
        kind = "timeout" if isinstance(e, TimeoutError) else "crash"
        first_line = (str(e).splitlines() or [type(e).__name__])[0]
        await self._discard()
        return EnvResult(None, done=True, failure=f"{kind}: {first_line}"[:200],
                         seconds=time.perf_counter() - t0)

    async def _discard(self) -> None:
        """Drop the env now; one that does not close in time takes its host with it (a page's
        renderer may be wedged, and a leaked browser context would keep it alive)."""
        env, self.env = self.env, None
        if env is None:
            return
        try:
            await asyncio.wait_for(env.close(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            await self.backend.replace_host(self.backend.host_of(env))
        self._host = self.backend.host_of(env)

    async def _rebuild(self, task: str) -> None:
        if self.failures:
            await asyncio.sleep(min(0.25 * 2 ** (self.failures - 1), MAX_BACKOFF_S))
        env = self.backend.new_env(task)
        try:
            await asyncio.wait_for(env.open(), self.hang_timeout_s)
        except self.failing:
            # The host may be alive but unusable (e.g. a hung browser): replace it once, then retry.
            with contextlib.suppress(*self.failing):
                await asyncio.wait_for(env.close(), CLOSE_TIMEOUT_S)
            host = self.backend.host_of(env)
            await self.backend.replace_host(host if host is not None else self._host)
            env = self.backend.new_env(task)
            await asyncio.wait_for(env.open(), self.hang_timeout_s)
        self.env = env
        self.rebuilds += 1
