"""Which Chromium browsers this test process started (for crash and clean-up tests)."""

import os
import time
from contextlib import suppress

import psutil


def browser_pids() -> list[int]:
    """Live main Chromium processes under this process: the `chromium` binary without --type=
    (renderers, zygotes and the GPU process carry one). Crash handlers (chrome_crashpad_handler,
    started after a kill) and zombies not yet reaped by Playwright's driver do not count."""
    pids = []
    for p in psutil.Process().children(recursive=True):
        with suppress(psutil.Error):
            cmd = p.cmdline()
            if (cmd and os.path.basename(cmd[0]) == "chromium" and p.status() != psutil.STATUS_ZOMBIE
                    and not any(a.startswith("--type=") for a in cmd)):
                pids.append(p.pid)
    return pids


def browsers_gone(timeout_s: float = 30.0) -> list[int]:
    """Wait (bounded) for every browser to exit; returns those still alive. Processes exit
    asynchronously after close(), later still on a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while (alive := browser_pids()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def flywheel_browsers(timeout_s: float = 30.0) -> list[int]:
    """Pids of Chromium processes on this machine that a BrowserHandle started (they carry its
    `--flywheel-browser=` marker) still alive after a bounded wait, wherever their parent is
    (Ray workers' browsers are not this process's children)."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            if p.info["status"] != psutil.STATUS_ZOMBIE and any(
                    a.startswith("--flywheel-browser=") for a in p.info["cmdline"] or ()):
                alive.append(p.info["pid"])
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.5)
