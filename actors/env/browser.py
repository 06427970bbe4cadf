"""One headless Chromium per actor, driven through Playwright's sync API.

The sync API ties every object to the thread that created it: build the browser and all its envs
on the same thread, never inside a running asyncio loop, and only one live browser per thread
(a second sync_playwright() on a thread whose first is still running raises).
"""

from __future__ import annotations

from typing import Self

from playwright.sync_api import Browser, BrowserContext, Playwright, sync_playwright

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


class BrowserHandle:
    """Owns the Playwright driver and the browser; `close()` stops both."""

    def __init__(self, playwright: Playwright, browser: Browser):
        self.playwright = playwright
        self.browser = browser
        self._closed = False

    def new_context(self, **kwargs) -> BrowserContext:
        return self.browser.new_context(**kwargs)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.browser.close()
        finally:
            # Stopping the driver also kills a browser that did not close cleanly.
            self.playwright.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def launch_browser(executable_path: str = CHROMIUM, headless: bool = True) -> BrowserHandle:
    """Start Playwright and the system Chromium (never a downloaded one)."""
    args = list(CHROMIUM_FLAGS)
    if headless:
        args.insert(0, "--headless")
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=executable_path, headless=headless, args=args)
    except BaseException:
        pw.stop()
        raise
    return BrowserHandle(pw, browser)
