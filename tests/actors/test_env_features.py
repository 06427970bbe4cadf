"""MiniWoB++ env features on the real system Chromium: the action types on tasks that need them,
accessibility-tree observations, screenshots, task switching, and EnvSlot's recovery from a
killed browser and a hung page (no timing asserts)."""

import hashlib
import os
import re
import signal

import pytest

from actors.env.browser import CHROMIUM, launch_browser
from actors.env.config import MiniWoBConfig
from actors.env.miniwob import AsyncMiniWoBEnv, MiniWoBBackend, MiniWoBEnv
from actors.env.slot import EnvSlot
from tests.support.chromium_processes import browser_pids

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="needs the system Chromium"),
]


@pytest.fixture(scope="module")
def browser():
    handle = launch_browser()
    yield handle
    handle.close()


def own_backend():
    """A fresh MiniWoB backend (its own browser) and the pid of its main Chromium process (the
    module's browser stays apart)."""
    before = set(browser_pids())
    backend = MiniWoBBackend(MiniWoBConfig(ref_mode="text"))
    (pid,) = set(browser_pids()) - before
    return backend, pid


def solved(result) -> bool:
    _, reward, done, info = result
    return done and info["success"] and reward == 1.0


# ---- action types ---------------------------------------------------------------------------


def test_select_on_choose_list(browser):
    env = MiniWoBEnv(browser, "choose-list", ref_mode="text")
    try:
        for seed in range(3):
            obs = env.reset(seed)
            option = re.fullmatch(r"Select (.+) from the list and click Submit\.", obs.task).group(1)
            picked, _, done, info = env.step(f'select("", "{option}")')  # the select has no text
            assert not done and info["error"] is None
            assert f'select value="{option}"' in picked.text
            assert solved(env.step('click("Submit")')), seed
    finally:
        env.close()


def test_scroll_on_scroll_text_2(browser):
    env = MiniWoBEnv(browser, "scroll-text-2", ref_mode="id", max_steps=20)
    try:
        for seed in range(3):
            obs = env.reset(seed)
            direction = "up" if "to the top" in obs.task else "down"
            submit = next(e for e in obs.elements if e.text == "Submit")
            for _ in range(12):  # 100 px a wheel turn; the text is a few hundred px tall
                assert env.step(f"scroll({direction})")[2] is False
            assert solved(env.step(f"click({submit.ref})")), seed
    finally:
        env.close()


def test_type_and_press_on_terminal(browser):
    env = MiniWoBEnv(browser, "terminal", ref_mode="id")
    try:
        for seed in range(3):
            obs = env.reset(seed)
            box = next(e for e in obs.elements if e.typeable)
            env.step(f'type({box.ref}, "ls")')
            listed, _, done, _ = env.step('press("Enter")')
            assert not done
            texts = [e.text for e in listed.elements]
            files = texts[texts.index("ls") + 1].split()  # the line after the command
            ext = re.search(r"extension \.(\S+)$", obs.task)
            target = next(f for f in files if (f.endswith("." + ext.group(1)) if ext else "." not in f))
            env.step(f'type({box.ref}, "rm {target}")')
            assert solved(env.step('press("Enter")')), seed
    finally:
        env.close()


# ---- observations ---------------------------------------------------------------------------


def test_axtree_observation(browser):
    env = MiniWoBEnv(browser, "click-button", observation="axtree")
    dom = MiniWoBEnv(browser, "click-button")
    try:
        obs, plain = env.reset(4), dom.reset(4)
        lines = obs.text.splitlines()
        assert lines[:2] == [f"Task: {obs.task}", "Page:"]
        target = re.search(r'"(.*)"', obs.task).group(1)
        assert f'- button "{target}"' in lines
        assert obs.text != plain.text and obs.allowed_actions == plain.allowed_actions
        assert solved(env.step(f'click("{target}")'))
    finally:
        env.close()
        dom.close()
    with pytest.raises(ValueError, match="ref_mode"):
        AsyncMiniWoBEnv(browser, "click-button", ref_mode="id", observation="axtree")


def test_screenshot_hash(browser):
    env = MiniWoBEnv(browser, "enter-text", ref_mode="id", screenshot=True)
    plain = MiniWoBEnv(browser, "enter-text", ref_mode="id")
    try:
        first = env.reset(1)
        assert first.screenshot.startswith(b"\x89PNG\r\n\x1a\n")
        assert first.screenshot_hash == hashlib.sha256(first.screenshot).hexdigest()
        assert env.reset(1).screenshot_hash == first.screenshot_hash  # same seed, same pixels
        assert env.reset(2).screenshot_hash != first.screenshot_hash
        obs = env.reset(1)
        box = next(e for e in obs.elements if e.typeable)
        typed = env.step(f'type({box.ref}, "hello")')[0]
        assert typed.screenshot_hash != first.screenshot_hash  # the text is drawn
        assert plain.reset(1).screenshot is None and plain.reset(1).screenshot_hash is None
    finally:
        env.close()
        plain.close()


def test_reset_switches_task(browser):
    env = MiniWoBEnv(browser, "click-button", ref_mode="id")
    fresh = MiniWoBEnv(browser, "click-link", ref_mode="id")
    try:
        switched = env.reset(5, task="click-link")
        assert env.task_name == "click-link" and switched == fresh.reset(5)
        assert env.reset(5, task="click-button").task != switched.task
    finally:
        env.close()
        fresh.close()


# ---- EnvSlot robustness ---------------------------------------------------------------------


def test_env_slot_recovers_from_a_killed_browser():
    backend, pid = own_backend()
    handle = backend.browser
    try:
        slot = EnvSlot(backend, hang_timeout_s=30, max_failures=10)
        first = handle.run(slot.reset(0, "click-button", 10))
        assert first.failure is None
        os.kill(pid, signal.SIGKILL)
        failed = handle.run(slot.step(first.obs.allowed_actions[0]))
        assert failed.failure.startswith("crash: ") and failed.done and failed.obs is None
        again = handle.run(slot.reset(0, "click-button", 10))
        assert again.failure is None and again.obs == first.obs
        assert handle.relaunches == 1 and pid not in browser_pids()
        assert handle.run(slot.step(first.obs.allowed_actions[0])).failure is None
    finally:
        backend.close()


def test_env_slot_times_out_a_hung_page():
    backend = MiniWoBBackend(MiniWoBConfig(ref_mode="text"))
    handle = backend.browser
    try:
        slot = EnvSlot(backend, hang_timeout_s=2, max_failures=10)
        first = handle.run(slot.reset(0, "click-button", 10))
        handle.run(slot.env._page.evaluate("() => { setTimeout(() => { while (true) {} }, 0); }"))
        failed = handle.run(slot.step(first.obs.allowed_actions[0]))
        assert failed.failure.startswith("timeout") and failed.done
        assert handle.run(slot.reset(0, "click-button", 10)).obs == first.obs
        assert slot.rebuilds == 2
    finally:
        backend.close()


def test_env_slot_gives_up_after_max_failures():
    backend, pid = own_backend()
    handle = backend.browser
    try:
        slot = EnvSlot(backend, hang_timeout_s=30, max_failures=3)
        first = handle.run(slot.reset(0, "click-button", 10))
        handle.executable_path = "/nonexistent/chromium"  # every relaunch fails from now on
        os.kill(pid, signal.SIGKILL)
        assert handle.run(slot.step(first.obs.allowed_actions[0])).failure.startswith("crash")
        assert handle.run(slot.reset(0, "click-button", 10)).failure is not None
        with pytest.raises(RuntimeError, match="failed 3 times in a row"):
            handle.run(slot.reset(0, "click-button", 10))
    finally:
        backend.close()
