"""MiniWoB++ env on the real system Chromium (no timing asserts)."""

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from actors.env.actions import format_ref
from actors.env.browser import CHROMIUM, launch_browser
from actors.env.miniwob import Element, MiniWoBEnv, make_observation

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK), reason="needs the system Chromium"
    ),
]


@pytest.fixture(scope="module")
def browser():
    handle = launch_browser()
    yield handle
    handle.close()


def quoted(task: str) -> str:
    return re.search(r'"(.*)"', task).group(1)


def click(el: Element, mode: str) -> str:
    return f"click({format_ref(el.text if mode == 'text' else el.ref, mode)})"


def oracle(task: str, obs, mode: str) -> str:
    """The right click for the tasks below, read from the utterance and the element list."""
    if task == "click-dialog":
        target = next(
            e for e in obs.elements if e.tag == "button" and e.text == "Close"
        )
    elif task == "focus-text":
        target = next(e for e in obs.elements if e.typeable)
    else:
        tag = {"click-button": "button", "click-link": "link"}[task]
        target = next(
            e for e in obs.elements if e.tag == tag and e.text == quoted(obs.task)
        )
    return click(target, mode)


@pytest.mark.parametrize(
    "task, mode",
    [
        ("click-button", "text"),
        ("click-button", "id"),
        ("click-link", "text"),
        ("click-link", "id"),
        ("click-dialog", "text"),
        ("focus-text", "id"),
    ],
)
def test_oracle_solves_task(browser, task, mode):
    env = MiniWoBEnv(browser, task, ref_mode=mode)
    try:
        for seed in range(10):
            obs = env.reset(seed)
            assert obs.text.startswith(f"Task: {obs.task}\nElements:\n")
            action = oracle(task, obs, mode)
            if task != "focus-text":
                assert action in obs.allowed_actions
            _, reward, done, info = env.step(action)
            assert (reward, done, info["success"], info["error"]) == (
                1.0,
                True,
                True,
                None,
            ), seed
    finally:
        env.close()


def test_observation_text_format(browser):
    env = MiniWoBEnv(browser, "click-button", ref_mode="id")
    try:
        obs = env.reset(0)
    finally:
        env.close()
    lines = obs.text.splitlines()
    assert lines[0] == f"Task: {obs.task}" and lines[1] == "Elements:"
    buttons = [e for e in obs.elements if e.tag == "button"]
    assert buttons and all(e.clickable and not e.typeable for e in buttons)
    for e in buttons:
        assert f'[{e.ref}] button "{e.text}"' in lines
    assert obs.allowed_actions == list(
        dict.fromkeys(f"click({e.ref})" for e in buttons)
    )


def test_wrong_click_fails(browser):
    env = MiniWoBEnv(browser, "click-button")
    try:
        for seed in range(100):
            obs = env.reset(seed)
            wrong = [
                e
                for e in obs.elements
                if e.tag == "button" and e.text != quoted(obs.task)
            ]
            if wrong:
                break
        _, reward, done, info = env.step(click(wrong[0], "text"))
        assert (
            done and not info["success"] and reward < 0 and info["raw_reward"] == reward
        )
    finally:
        env.close()


@pytest.mark.parametrize(
    "action, mode, message",
    [
        ("foo(", "text", "cannot parse"),
        ("click(3)", "text", "cannot parse"),
        ('click("no such button")', "text", "no element"),
        ("click(999)", "id", "no element"),
        ('type(4, "x")', "id", "not a textbox"),
        ('press("NoSuchKey")', "text", "Unknown key"),
    ],
)
def test_invalid_action_gives_error_and_env_keeps_working(
    browser, action, mode, message
):
    env = MiniWoBEnv(browser, "click-button", ref_mode=mode)
    try:
        obs = env.reset(0)  # seed 0: element 4 is a button
        bad, reward, done, info = env.step(action)
        assert bad.text.startswith("Error: ") and message in bad.text.splitlines()[0]
        assert info["error"] and (reward, done, info["success"]) == (0.0, False, False)
        assert (
            bad.text.split("\n", 1)[1] == obs.text
            and bad.allowed_actions == obs.allowed_actions
        )
        _, reward, done, info = env.step(oracle("click-button", obs, mode))
        assert (reward, done, info["success"], info["error"]) == (1.0, True, True, None)
    finally:
        env.close()


def test_same_seed_same_observation(browser):
    env = MiniWoBEnv(browser, "click-link", ref_mode="id")
    other = MiniWoBEnv(browser, "click-link", ref_mode="id")
    try:
        first = env.reset(42)
        env.step("scroll(down)")  # leave the episode unfinished
        assert env.reset(42) == first
        env.step(oracle("click-link", first, "id"))
        assert env.reset(42) == first
        assert other.reset(42) == first  # a separate context replays it too
        assert env.reset(43).text != first.text
    finally:
        env.close()
        other.close()


def test_max_steps_and_step_after_done(browser):
    env = MiniWoBEnv(browser, "click-option", ref_mode="id", max_steps=2)
    try:
        obs = env.reset(3)
        radio = next(e for e in obs.elements if e.tag == "radio")
        assert env.step(f"click({radio.ref})")[1:3] == (0.0, False)
        _, reward, done, info = env.step(f"click({radio.ref})")
        assert (reward, done, info["success"], info["truncated"]) == (
            0.0,
            True,
            False,
            True,
        )
        after, reward, done, info = env.step(f"click({radio.ref})")
        assert after.text.startswith("Error: ") and done and reward == 0.0
        assert (
            env.reset(3) == obs
        )  # an unfinished episode does not disturb the next one
    finally:
        env.close()


def test_type_and_submit(browser):
    env = MiniWoBEnv(browser, "enter-text", ref_mode="id")
    try:
        for seed in range(3):
            obs = env.reset(seed)
            box = next(e for e in obs.elements if e.typeable)
            submit = next(e for e in obs.elements if e.text == "Submit")
            typed, _, done, info = env.step(f'type({box.ref}, "wrong")')
            typed, _, done, info = env.step(f'type({box.ref}, "{quoted(obs.task)}")')
            assert not done and info["error"] is None
            assert f'[{box.ref}] textbox value="{quoted(obs.task)}"' in typed.text
            _, reward, done, info = env.step(click(submit, "id"))
            assert (reward, done, info["success"]) == (1.0, True, True)
    finally:
        env.close()


def test_make_observation_dedups_allowed_actions():
    els = [
        Element(4, "button", "ok", True, False, (0, 0, 10, 10)),
        Element(5, "textbox", "", True, True, (0, 10, 10, 10), "hi"),
        Element(6, "text", "lorem", False, False, (0, 20, 10, 10)),
        Element(7, "button", "ok", True, False, (0, 30, 10, 10)),
    ]
    text_obs = make_observation('Click on the "ok" button.', els, "text")
    assert text_obs.text == (
        'Task: Click on the "ok" button.\nElements:\n'
        'button "ok"\ntextbox value="hi"\ntext "lorem"\nbutton "ok"'
    )
    assert text_obs.allowed_actions == ['click("ok")']
    id_obs = make_observation("t", els, "id")
    assert id_obs.text.splitlines()[2:] == [
        '[4] button "ok"',
        '[5] textbox value="hi"',
        '[6] text "lorem"',
        '[7] button "ok"',
    ]
    assert id_obs.allowed_actions == ["click(4)", "click(7)"]


def _chromium_descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process just exited
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            todo.append(pid)
            try:
                if b"chromium" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                pass
    return found


def test_browser_closes_cleanly():
    # From another thread: a handle may be started, used and closed from any thread.
    before = set(_chromium_descendants(os.getpid()))

    def run():
        handle = launch_browser()
        env = MiniWoBEnv(handle, "click-button")
        env.reset(0)
        started = set(_chromium_descendants(os.getpid())) - before
        handle.close()
        handle.close()  # idempotent
        return started

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(run).result()
    for _ in range(50):  # reaping can lag a moment behind close()
        if not set(_chromium_descendants(os.getpid())) - before:
            break
        time.sleep(0.1)
    assert set(_chromium_descendants(os.getpid())) - before == set()
