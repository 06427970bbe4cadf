"""MiniWoB++ task pages from the `miniwob` wheel: one isolated browser context + page per env slot.

Each episode restarts inside the already loaded page with MiniWoB's own JavaScript (seed with
Math.seedrandom, then core.startEpisodeReal) and reads the reward from its globals, the way the
wheel's selenium_instance.py does, without reloading the page. A reset to a different task
navigates the slot's page to that task first.

`AsyncMiniWoBEnv` (an Env, actors/env/base.py) runs on the browser thread (actors/env/browser.py);
`MiniWoBEnv` is a blocking facade over it for scripts and tests, callable from any thread;
`MiniWoBBackend` (the registry's "miniwob", an EnvBackend) is what a rollout actor holds: one
Chromium, an isolated context per slot's env.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

from playwright.async_api import Error as PlaywrightError

from actors.env.actions import Action, ActionError, parse_action, quote
from actors.env.browser import BrowserHandle
from actors.env.config import MiniWoBConfig
from actors.env.miniwob_js import CENTER_JS, OBSERVE_JS, RESET_OBSERVE_JS, SELECT_ALL_JS, SELECT_OPTION_JS
from actors.env.observation import Element, Observation, make_observation, parse_elements

__all__ = ["AsyncMiniWoBEnv", "Element", "MiniWoBBackend", "MiniWoBEnv", "Observation",
           "make_observation", "task_page"]

# The package is located without importing it (its __init__ pulls in gymnasium).
HTML_DIR = Path(importlib.util.find_spec("miniwob").submodule_search_locations[0]) / "html"
TASK_DIR = HTML_DIR / "miniwob"
MAX_TIMER_MS = 2**31 - 1  # setTimeout's maximum; a larger delay fires at once
SCROLL_PX = 100
TASK_BOX = {"x": 0, "y": 0, "width": 160, "height": 210}  # MiniWoB draws every task here
TASK_CENTER = (80, 130)
OBSERVATIONS = ("dom", "axtree")


def task_page(task: str) -> Path:
    page_file = TASK_DIR / f"{task}.html"
    if not page_file.is_file():
        raise ValueError(f"unknown MiniWoB task {task!r} (no {page_file})")
    return page_file


class AsyncMiniWoBEnv:
    """One MiniWoB++ task page in its own browser context (coroutines for the browser thread).

    `await open()` once, then reset(seed, task=None) -> Observation and step(action text) ->
    (Observation, reward, done, info). reward is MiniWoB's raw (not time-scaled) reward once the
    page ends the episode (+1 success, -1 failure, partial credit in between), else 0. Every
    step counts toward max_steps, invalid ones too; reaching it ends the episode with done=True,
    success=False, info["truncated"]=True. An unparsable or impossible action gives an error
    observation ("Error: ..." first line), never an exception.

    observation "dom": the task and a compact element list; "axtree": the task and Playwright's
    accessibility (ARIA) snapshot of the task area. screenshot=True adds the task area's PNG
    and its sha256 to every observation of a running episode.

    NOT guaranteed: with "axtree", action refs are still resolved against the element list
    (ref_mode "text": the element's visible text), which usually but not always equals the
    tree's accessible name; "axtree" needs ref_mode "text" (the tree shows no MiniWoB refs).
    Exceptions from a crashed or closed page propagate (EnvSlot turns them into outcomes).
    """

    def __init__(self, browser: BrowserHandle, task: str = "click-button", ref_mode: str = "text",
                 max_steps: int = 10, episode_max_time_s: float | None = None,
                 step_timeout_s: float = 5.0, observation: str = "dom", screenshot: bool = False):
        if ref_mode not in ("text", "id"):
            raise ValueError(f"unknown ref_mode {ref_mode!r}")
        if observation not in OBSERVATIONS:
            raise ValueError(f"unknown observation {observation!r}; one of {OBSERVATIONS}")
        if observation == "axtree" and ref_mode != "text":
            raise ValueError("axtree observations name elements by text: use ref_mode 'text'")
        task_page(task)
        self.browser = browser
        self.task_name, self.ref_mode, self.max_steps = task, ref_mode, max_steps
        self.observation_mode, self.screenshot = observation, screenshot
        # None disables the page's own episode timer (in practice: ~24 days).
        self._timer_ms = MAX_TIMER_MS if episode_max_time_s is None else int(episode_max_time_s * 1000)
        self._step_timeout_ms = step_timeout_s * 1000
        self.generation: int | None = None  # of the browser the context lives on
        self._context = self._page = None
        self._loaded: str | None = None
        self._obs: Observation | None = None
        self._done = True
        self._steps = 0

    async def open(self) -> None:
        self._context, self.generation = await self.browser.new_context()
        self._context.set_default_timeout(self._step_timeout_ms)
        self._page = await self._context.new_page()
        await self._load(self.task_name)

    async def _load(self, task: str) -> None:
        page_file = task_page(task)
        load_ms = max(30_000, self._step_timeout_ms)  # once per task; a busy machine is slow here
        await self._page.goto(page_file.as_uri(), timeout=load_ms)
        await self._page.wait_for_function("() => core.cover_div !== null", timeout=load_ms)  # onload ran
        self._loaded = self.task_name = task

    async def reset(self, seed: int, task: str | None = None, max_steps: int | None = None) -> Observation:
        if task is not None and task != self._loaded:
            await self._load(task)
        if max_steps is not None:
            self.max_steps = max_steps
        observed = await self._page.evaluate(RESET_OBSERVE_JS, [seed, self._timer_ms])
        if observed is None:
            await self._page.wait_for_function("() => WOB_TASK_READY")
        self._done, self._steps = False, 0
        self._obs = await self._observe(observed=observed)
        return self._obs

    async def step(self, action: str) -> tuple[Observation, float, bool, dict]:
        info = {"success": False, "raw_reward": 0.0, "error": None, "reason": None,
                "truncated": False, "steps": self._steps}
        if self._obs is None or self._done:
            info["error"] = "the episode is over; call reset()"
            return self._with_error(self._obs_or_empty(), info["error"]), 0.0, True, info
        self._steps += 1
        info["steps"] = self._steps
        # With the page's timer on, the episode may have timed out since the last observation;
        # acting then would click MiniWoB's start cover and begin an unseeded episode.
        timed_out = self._timer_ms < MAX_TIMER_MS and await self._page.evaluate("() => WOB_DONE_GLOBAL")
        if not timed_out:
            try:
                await self._apply(parse_action(action, self.ref_mode))
            except (ActionError, PlaywrightError) as e:
                info["error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
        obs, status = await self._observe(with_status=True)
        reward, done = 0.0, bool(status["done"])
        if done:
            info["raw_reward"] = reward = float(status["rawReward"])
            info["success"] = reward > 0
            info["reason"] = status["reason"]
        elif self._steps >= self.max_steps:
            done = info["truncated"] = True
        self._done, self._obs = done, obs
        if info["error"]:
            obs = self._with_error(obs, info["error"])
        return obs, reward, done, info

    async def close(self) -> None:
        try:
            if self._context is not None:
                await self._context.close()
        except PlaywrightError:
            pass  # the browser is already gone

    # -- internals ---------------------------------------------------------------------------

    async def _observe(self, with_status: bool = False, observed: str | None = None):
        """The observation (and the page status); `observed`: OBSERVE_JS's answer, if taken."""
        status = json.loads(observed if observed is not None else await self._page.evaluate(OBSERVE_JS))
        elements = parse_elements(status["elements"]) if status["elements"] is not None else []
        running = not status["done"]
        axtree = None
        if self.observation_mode == "axtree" and running:
            axtree = await self._page.locator("#area").aria_snapshot()
        obs = make_observation(status["task"], elements, self.ref_mode, axtree)
        if self.screenshot and running:
            png = await self._page.screenshot(type="png", clip=TASK_BOX)
            obs = dataclasses.replace(obs, screenshot=png, screenshot_hash=hashlib.sha256(png).hexdigest())
        return (obs, status) if with_status else obs

    def _obs_or_empty(self) -> Observation:
        return self._obs or make_observation("", [], self.ref_mode)

    @staticmethod
    def _with_error(obs: Observation, message: str) -> Observation:
        return dataclasses.replace(obs, text=f"Error: {message}\n{obs.text}")

    async def _apply(self, action: Action) -> None:
        page = self._page
        if action.kind == "press":
            await page.keyboard.press(action.arg)
            return
        if action.kind == "scroll":
            await page.mouse.move(*TASK_CENTER)
            await page.mouse.wheel(0, SCROLL_PX if action.arg == "down" else -SCROLL_PX)
            return
        el = self._resolve(action)
        if action.kind == "select":
            if el.tag != "select" or el.ref <= 0:
                raise ActionError(f"element {self._describe(action.ref)} is not a select")
            if not await page.evaluate(SELECT_OPTION_JS, [el.ref, action.arg]):
                raise ActionError(f"element {self._describe(action.ref)} has no option {quote(action.arg)}")
            return
        if action.kind == "type" and not el.typeable:
            raise ActionError(f"element {self._describe(action.ref)} is not a textbox")
        await page.mouse.click(*await self._center(el))
        if action.kind == "type":
            await page.evaluate(SELECT_ALL_JS, el.ref)  # typing replaces the current value
            if action.arg:
                await page.keyboard.type(action.arg)
            else:
                await page.keyboard.press("Backspace")

    def _resolve(self, action: Action) -> Element:
        elements = self._obs.elements
        if self.ref_mode == "id":
            matches = [e for e in elements if e.ref == action.ref and e.ref > 0]
        else:
            matches = [e for e in elements if e.text == action.ref]
            # Prefer the element kind the action is for (a button over a same-named label).
            want = {"click": lambda e: e.clickable, "type": lambda e: e.typeable,
                    "select": lambda e: e.tag == "select"}[action.kind]
            matches.sort(key=lambda e: not want(e))
        if not matches:
            raise ActionError(f"no element {self._describe(action.ref)}")
        return matches[0]

    def _describe(self, ref: str | int) -> str:
        return f"with text {quote(ref)}" if self.ref_mode == "text" else f"with ref {ref}"

    async def _center(self, el: Element) -> tuple[float, float]:
        left, top, width, height = el.box
        x, y = left + width / 2, top + height / 2
        vp = self._page.viewport_size or {"width": 1280, "height": 720}
        if el.ref > 0 and not (0 <= x < vp["width"] and 0 <= y < vp["height"]):
            center = await self._page.evaluate(CENTER_JS, el.ref)
            if center:
                x, y = center
        return x, y


class MiniWoBEnv:
    """Blocking facade over AsyncMiniWoBEnv (same arguments, same results), for scripts and
    tests: each call runs on the browser thread and waits for it. Safe from any thread.

    NOT guaranteed: concurrency across MiniWoBEnv objects beyond what one browser thread gives;
    the rollout actor uses the async env directly for that.
    """

    def __init__(self, browser: BrowserHandle, task: str = "click-button", **kwargs):
        self._browser = browser
        self._env = AsyncMiniWoBEnv(browser, task, **kwargs)
        browser.run(self._env.open())

    @property
    def task_name(self) -> str:
        return self._env.task_name

    def reset(self, seed: int, task: str | None = None, max_steps: int | None = None) -> Observation:
        return self._browser.run(self._env.reset(seed, task, max_steps))

    def step(self, action: str) -> tuple[Observation, float, bool, dict]:
        return self._browser.run(self._env.step(action))

    def close(self) -> None:
        if not self._browser.closed:
            self._browser.run(self._env.close())


class MiniWoBBackend:
    """The MiniWoB++ env of one rollout actor (the EnvBackend of actors/env/base.py): one
    Chromium on its own thread (BrowserHandle, launched now), an isolated browser context per
    slot's AsyncMiniWoBEnv, all configured by a MiniWoBConfig. A host incarnation is the
    browser's generation; replacing it relaunches Chromium (once, however many slots ask).

    NOT guaranteed: that a relaunch succeeds (it raises like the first launch).
    """

    errors = (PlaywrightError,)

    def __init__(self, config: MiniWoBConfig):
        self.config = config
        self.ref_mode = config.ref_mode
        self.browser = BrowserHandle(config.chromium)

    @classmethod
    def check_task(cls, task: str) -> None:
        task_page(task)

    @property
    def closed(self) -> bool:
        return self.browser.closed

    def new_env(self, task: str) -> AsyncMiniWoBEnv:
        c = self.config
        return AsyncMiniWoBEnv(self.browser, task, ref_mode=c.ref_mode, episode_max_time_s=c.episode_max_time_s,
                               step_timeout_s=c.step_timeout_s, observation=c.observation,
                               screenshot=c.screenshot)

    def submit(self, coro):
        return self.browser.submit(coro)

    def host_of(self, env: AsyncMiniWoBEnv) -> int | None:
        return env.generation

    async def replace_host(self, host: int | None) -> None:
        await self.browser.ensure(host, force=True)

    def stats(self) -> dict[str, int]:
        return {"browser_relaunches": self.browser.relaunches}

    def close(self) -> None:
        self.browser.close()
