"""No Chromium outlives its BrowserHandle: every browser carries the handle's marker switch, and
close() kills whatever still carries it after the graceful close."""

import contextlib
import subprocess
import sys

import psutil

from actors.env.browser import kill_marked, launch_browser


def marked(marker: str) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or ())]


def test_kill_marked_kills_exactly_the_marked_processes():
    marker = "--flywheel-browser=test-kill-marked"
    keep = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "--other"])
    doomed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker])
    try:
        assert kill_marked(marker) == [doomed.pid]
        doomed.wait(timeout=10)  # gone (kill_marked may have reaped it already)
        assert keep.poll() is None
    finally:
        keep.kill()
        doomed.kill()


def test_close_leaves_no_marked_process_nor_the_driver_even_when_the_driver_hangs():
    handle = launch_browser()
    (main,) = [pid for pid in marked(handle.marker)
               if not any(a.startswith("--type=") for a in psutil.Process(pid).cmdline())]
    driver = psutil.Process(main).parent()  # Playwright's driver: stopped, it cannot close anything
    assert driver.pid == handle._driver.pid
    driver.suspend()
    try:
        handle.close()
        assert marked(handle.marker) == []
        assert not driver.is_running() or driver.status() == psutil.STATUS_ZOMBIE
    finally:
        with contextlib.suppress(psutil.Error):
            driver.kill()
