"""EnvSlot: one env slot of a rollout actor, on the browser thread, that survives its page.

reset() and step() never raise for a page problem: a crashed page or browser (any Playwright
error reaching them) or a call still unfinished after `hang_timeout_s` comes back as a result
with `failure` set, and the slot is marked broken. The next reset() first rebuilds it: the old
context is closed (best effort), the browser is relaunched if it died (once per death, see
BrowserHandle.ensure), and a fresh context loads the task page.

NOT guaranteed: recovery itself can fail (Chromium cannot start); each failed rebuild is
another failure result, with a growing pause before the next try, and after `max_failures`
failures in a row reset() raises — an actor that cannot get a page should stop loudly rather
than spin. Exceptions other than Playwright errors and timeouts (bugs) propagate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from playwright.async_api import Error as PlaywrightError

from actors.env.browser import BrowserHandle
from actors.env.miniwob import AsyncMiniWoBEnv
from actors.env.observation import Observation

CLOSE_TIMEOUT_S = 5.0
MAX_BACKOFF_S = 10.0


@dataclass
class EnvResult:
    obs: Observation | None
    reward: float = 0.0
    done: bool = False
    info: dict = field(default_factory=dict)
    failure: str | None = None  # why the page could not answer; the episode's outcome is unknown
    seconds: float = 0.0  # time spent on the browser thread, rebuilds included


class EnvSlot:
    def __init__(self, browser: BrowserHandle, env_kwargs: dict, *, hang_timeout_s: float = 30.0,
                 max_failures: int = 10):
        self.browser = browser
        self.env_kwargs = dict(env_kwargs)
        self.hang_timeout_s = hang_timeout_s
        self.max_failures = max_failures
        self.env: AsyncMiniWoBEnv | None = None
        self._generation: int | None = None  # of the browser the last page lived on
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
        except (PlaywrightError, TimeoutError) as e:
            return await self._failed(e, t0)
        self.failures = 0
        return EnvResult(obs, seconds=time.perf_counter() - t0)

    async def step(self, action: str) -> EnvResult:
        t0 = time.perf_counter()
        if self.env is None:
            return EnvResult(None, done=True, failure="crash: the slot has no page", seconds=0.0)
        try:
            obs, reward, done, info = await asyncio.wait_for(self.env.step(action), self.hang_timeout_s)
        except (PlaywrightError, TimeoutError) as e:
            return await self._failed(e, t0)
        return EnvResult(obs, reward, done, info, seconds=time.perf_counter() - t0)

    async def close(self) -> None:
        if self.env is not None:
            with contextlib.suppress(PlaywrightError, TimeoutError):
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
        """Drop the page now; a context that does not close in time takes its browser with it
        (the page's renderer may be wedged, and a leaked context would keep it alive)."""
        env, self.env = self.env, None
        if env is None:
            return
        try:
            await asyncio.wait_for(env.close(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            await self.browser.ensure(env.generation, force=True)
        self._generation = env.generation

    async def _rebuild(self, task: str) -> None:
        if self.failures:
            await asyncio.sleep(min(0.25 * 2 ** (self.failures - 1), MAX_BACKOFF_S))
        env = AsyncMiniWoBEnv(self.browser, **{**self.env_kwargs, "task": task})
        generation = self._generation
        try:
            await asyncio.wait_for(env.open(generation), self.hang_timeout_s)
        except (PlaywrightError, TimeoutError):
            # The browser may be alive but unusable (e.g. hung): replace it once, then retry.
            with contextlib.suppress(PlaywrightError, TimeoutError):
                await asyncio.wait_for(env.close(), CLOSE_TIMEOUT_S)
            await self.browser.ensure(env.generation if env.generation is not None else generation, force=True)
            env = AsyncMiniWoBEnv(self.browser, **{**self.env_kwargs, "task": task})
            await asyncio.wait_for(env.open(), self.hang_timeout_s)
        self.env = env
        self.rebuilds += 1
