"""One headless Chromium per actor, driven by Playwright's async API on its own asyncio thread.

Why one asyncio thread rather than a sync browser per worker thread: Playwright's sync API binds
a browser to the thread that made it, so overlapping N page steps with sync calls takes N threads
and N browsers (N drivers, N Chromium main processes, N times the baseline memory). The async
API drives every page of an actor concurrently from one thread, one driver and one browser —
the design's "one browser per actor, an isolated context per slot" — and a hung page becomes a
cancellable await (asyncio.wait_for) instead of a thread blocked for good.

Any thread may use a BrowserHandle: `submit(coro)` schedules a coroutine on the browser thread
and returns a concurrent.futures.Future, `run(coro)` waits for it. Coroutines that touch pages
must run there (they are built from AsyncMiniWoBEnv / EnvSlot methods).

A browser that died (crashed, killed) is relaunched by `ensure(generation)`: every context
remembers the generation of the browser it was made on, so several slots noticing the same
death relaunch it once.

Every browser this handle launches carries a marker switch (`--flywheel-browser=<id>`, which
Chromium ignores), so `close()` can make sure none outlives it: after the graceful close (which
on a loaded machine can time out, leaving the driver or the browser behind) it kills Playwright's
driver if it is still running and whatever process still carries the marker.

NOT guaranteed: that a relaunch succeeds (it raises like the first launch did); contexts of a
dead browser are not revived (each owner makes a new one); a coroutine still running when
`close()` is called is cancelled (its future reports CancelledError); a graceful close.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import uuid
from typing import Self

import psutil
from playwright.async_api import Browser, BrowserContext, async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
)
CLOSE_TIMEOUT_S = 10.0


class BrowserHandle:
    """Owns the browser thread, the Playwright driver and the browser; `close()` stops all."""

    def __init__(self, executable_path: str = CHROMIUM, headless: bool = True):
        self.executable_path, self.headless = executable_path, headless
        self.marker = f"--flywheel-browser={uuid.uuid4().hex}"
        self.generation = 0  # bumped by every relaunch
        self.relaunches = 0
        self._closed = False
        self._pw = None
        self._driver: psutil.Process | None = None  # Playwright's driver process, once found
        self._browser: Browser | None = None
        self._lock: asyncio.Lock | None = None
        self._work: set[concurrent.futures.Future] = set()  # submitted, not done
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="browser", daemon=True)
        self._thread.start()
        try:
            self.run(self._start())
        except BaseException:
            self._stop_thread()
            raise

    # ---- any thread --------------------------------------------------------------------------
    def submit(self, coro) -> concurrent.futures.Future:
        if self._closed:
            coro.close()
            raise RuntimeError("the browser handle is closed")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        self._work.add(fut)
        fut.add_done_callback(self._work.discard)
        return fut

    def run(self, coro, timeout: float | None = None):
        return self.submit(coro).result(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        for fut in list(self._work):  # page work still running (a hung page) is cancelled
            fut.cancel()
        try:
            # Best effort: a driver that already died cannot stop cleanly, and there is nothing
            # left to save; the thread stops either way.
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(3 * CLOSE_TIMEOUT_S + 5)
        finally:
            self._closed = True
            self._kill_driver()  # a driver that hung through the graceful close
            self._stop_thread()
            kill_marked(self.marker)

    def _kill_driver(self) -> None:
        if self._driver is None:
            return
        with contextlib.suppress(psutil.Error):
            if self._driver.is_running():
                self._driver.kill()
                self._driver.wait(CLOSE_TIMEOUT_S)
                # Let Playwright's transport see the pipe close before the loop stops.
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(asyncio.sleep(0.2), self._loop).result(5)
        _DRIVERS.discard(self._driver.pid)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- browser thread ----------------------------------------------------------------------
    async def ensure(self, generation: int | None = None, force: bool = False) -> tuple[Browser, int]:
        """The live browser and its generation. A disconnected browser is replaced; with `force`,
        so is a connected one — if it is still the browser of `generation` (None: whichever is
        current), so that several callers reporting the same bad browser replace it once."""
        async with self._lock:
            stale = generation is None or generation == self.generation
            dead = self._browser is None or not self._browser.is_connected()  # None: a relaunch failed
            if dead or (stale and force):
                old, self._browser = self._browser, None
                if old is not None:
                    with contextlib.suppress(Exception):  # it is dead or dying; the driver reaps it
                        await asyncio.wait_for(old.close(), CLOSE_TIMEOUT_S)
                self._browser = await self._launch()
                self.generation += 1
                self.relaunches += 1
            return self._browser, self.generation

    async def new_context(self, generation: int | None = None, **kwargs) -> tuple[BrowserContext, int]:
        browser, gen = await self.ensure(generation)
        return await browser.new_context(**kwargs), gen

    async def _start(self) -> None:
        self._lock = asyncio.Lock()
        before = {c.pid for c in psutil.Process().children()}
        self._pw = await async_playwright().start()
        self._driver = _new_driver(before)
        try:
            self._browser = await self._launch()
        except BaseException:
            await self._pw.stop()
            raise

    async def _launch(self) -> Browser:
        """Start the system Chromium (never a downloaded one)."""
        args = [*CHROMIUM_FLAGS, self.marker]
        if self.headless:
            args.insert(0, "--headless")
        return await self._pw.chromium.launch(executable_path=self.executable_path,
                                              headless=self.headless, args=args)

    async def _close(self) -> None:
        if self._browser is not None:
            with contextlib.suppress(Exception):  # stopping the driver below kills it anyway
                await asyncio.wait_for(self._browser.close(), CLOSE_TIMEOUT_S)
        # Stopping the driver also kills a browser that did not close cleanly.
        await asyncio.wait_for(self._pw.stop(), CLOSE_TIMEOUT_S)

    def _stop_thread(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CLOSE_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()


_DRIVERS: set[int] = set()  # driver pids claimed by the handles of this process


def _new_driver(before: set[int]) -> psutil.Process | None:
    """Playwright's driver that the start which `before` preceded launched: a new child of this
    process running the driver, not claimed by another handle (None if it cannot be told)."""
    found = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if child.pid not in before and child.pid not in _DRIVERS and "run-driver" in child.cmdline():
                found.append(child)
    if len(found) != 1:
        return None
    _DRIVERS.add(found[0].pid)
    return found[0]


def launch_browser(executable_path: str = CHROMIUM, headless: bool = True) -> BrowserHandle:
    return BrowserHandle(executable_path, headless)


def kill_marked(marker: str, timeout_s: float = 5.0) -> list[int]:
    """SIGKILL every process whose command line carries `marker`; returns their pids."""
    procs = []
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if marker in (p.info["cmdline"] or ()):
                p.kill()
                procs.append(p)
    psutil.wait_procs(procs, timeout=timeout_s)
    return [p.pid for p in procs]
