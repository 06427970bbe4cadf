"""MiniWoB++ task pages from the `miniwob` wheel: one isolated browser context + page per env slot.

Each episode restarts inside the already loaded page with MiniWoB's own JavaScript (seed with
Math.seedrandom, then core.startEpisodeReal) and reads the reward from its globals, the way the
wheel's selenium_instance.py does, without reloading the page.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError

from actors.env.actions import Action, ActionError, format_ref, parse_action, quote

# The package is located without importing it (its __init__ pulls in gymnasium).
HTML_DIR = Path(importlib.util.find_spec("miniwob").submodule_search_locations[0]) / "html"
TASK_DIR = HTML_DIR / "miniwob"
MAX_TIMER_MS = 2**31 - 1  # setTimeout's maximum; a larger delay fires at once
SCROLL_PX = 100
TASK_CENTER = (80, 130)  # MiniWoB draws every task in the 160x210 px box at the top left

# Ending an unfinished episode first bumps WOB_EPISODE_ID, so refs cached on elements that
# survive into the next episode are renumbered instead of colliding with fresh ones.
_RESET_JS = """([seed, maxTimeMs]) => {
  core.endEpisode(0);
  core.EPISODE_MAX_TIME = maxTimeMs;
  Math.seedrandom(seed);
  core.startEpisodeReal();
  return WOB_TASK_READY;
}"""

# Status, and when the episode still runs, the flattened core.getDOMInfo() tree (which also
# stores each element's ref on it and fills core.previousDOMInfo[ref] -> element).
_OBSERVE_JS = """() => {
  const status = {task: core.getUtterance(), done: WOB_DONE_GLOBAL, rawReward: WOB_RAW_REWARD_GLOBAL,
                  reason: WOB_REWARD_REASON, elements: null};
  if (WOB_DONE_GLOBAL) return status;
  const out = [];
  const walk = (n, hidden, owned) => {
    const el = n.ref > 0 ? core.previousDOMInfo[n.ref] : null;
    let name = '', cursor = '', skip = false, owner = false;
    if (el) {
      const s = getComputedStyle(el);
      hidden = hidden || s.visibility !== 'visible';
      cursor = s.cursor;
      const label = el.labels && el.labels.length ? el.labels[0].innerText : '';
      name = el.getAttribute('aria-label') || label || el.getAttribute('title') ||
             el.getAttribute('placeholder') || '';
      if (['A', 'BUTTON', 'LABEL'].includes(el.tagName) && !n.text) {
        // Mixed content: the element is named by its text, which is not listed again below it.
        name = name || el.innerText;
        owner = !!name;
      }
      skip = el.tagName === 'LABEL' && !!el.control;  // its control carries the label's text
      if (el.tagName === 'SELECT' && el.selectedIndex >= 0) n.value = el.options[el.selectedIndex].text;
    }
    out.push({ref: n.ref, tag: n.tag, text: n.text || '', name: name, cursor: cursor,
              hidden: hidden, skip: skip, owned: owned, value: n.value === undefined ? null : n.value,
              box: [n.left, n.top, n.width, n.height]});
    n.children.forEach(c => walk(c, hidden, owned || owner || skip));
  };
  walk(core.getDOMInfo(), false, false);
  status.elements = out;
  return status;
}"""

_CENTER_JS = """ref => {
  const el = core.previousDOMInfo[ref];
  if (!el) return null;
  el.scrollIntoView({block: 'center', inline: 'center'});
  const r = el.getBoundingClientRect();
  return [r.left + r.width / 2, r.top + r.height / 2];
}"""

_SELECT_ALL_JS = "ref => { const el = core.previousDOMInfo[ref]; if (el && el.select) el.select(); }"

_SELECT_OPTION_JS = """([ref, label]) => {
  const el = core.previousDOMInfo[ref];
  const opt = Array.from(el.options).find(o => o.text.trim() === label || o.value === label);
  if (!opt) return false;
  el.value = opt.value;
  el.dispatchEvent(new Event('input', {bubbles: true}));
  el.dispatchEvent(new Event('change', {bubbles: true}));
  return true;
}"""

_TYPEABLE_INPUTS = {"text", "password", "email", "number", "search", "tel", "url", "date",
                    "time", "datetime-local", "month", "week"}


@dataclass(frozen=True)
class Element:
    ref: int  # MiniWoB's ref: stable within an episode (text nodes get negative, unstable refs)
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


def _display_tag(tag: str, cursor: str) -> tuple[str, bool, bool]:
    """MiniWoB tag (+ CSS cursor) -> (display tag, clickable, typeable)."""
    if tag.startswith("INPUT_"):
        kind = tag[6:]
        if kind in _TYPEABLE_INPUTS:
            return "textbox", True, True
        if kind in ("button", "submit", "reset", "image"):
            return "button", True, False
        return kind, True, False  # checkbox, radio, range, ...
    fixed = {"BUTTON": ("button", True, False), "A": ("link", True, False),
             "TEXTAREA": ("textbox", True, True), "SELECT": ("select", True, False),
             "LABEL": ("label", True, False)}
    if tag in fixed:
        return fixed[tag]
    if cursor == "pointer":
        return "link", True, False
    return "text", False, False


def _elements(raw: list[dict]) -> list[Element]:
    out = []
    for r in raw:
        left, top, width, height = r["box"]
        if r["hidden"] or r["tag"] == "BODY" or left + width <= 0 or top + height <= 0:
            continue  # hidden, or parked off-screen (e.g. jQuery UI's icon-button labels)
        tag, clickable, typeable = _display_tag(r["tag"], r["cursor"])
        if r["skip"] or (r["owned"] and tag == "text"):
            continue
        text = " ".join((r["text"] or r["name"]).split())
        value = r["value"]
        if tag == "button" and not text and isinstance(value, str):
            text, value = value, None  # <input type=submit value="Submit">
        interactive = r["tag"] in ("BUTTON", "A", "TEXTAREA", "SELECT") or r["tag"].startswith("INPUT_")
        if not text and not interactive:
            continue
        out.append(Element(r["ref"], tag, text, clickable, typeable, (left, top, width, height), value))
    return out


def render_element(el: Element, ref_mode: str) -> str:
    parts = [f"[{el.ref}]"] if ref_mode == "id" and el.ref > 0 else []
    parts.append(el.tag)
    if el.text:
        parts.append(quote(el.text))
    if el.value is True:
        parts.append("checked")
    elif isinstance(el.value, str) and el.value:
        parts.append("value=" + quote(el.value))
    return " ".join(parts)


def make_observation(task: str, elements: list[Element], ref_mode: str) -> Observation:
    lines = [f"Task: {task}", "Elements:"] + [render_element(e, ref_mode) for e in elements]
    allowed = []
    for e in elements:
        if e.clickable and e.text and (ref_mode == "text" or e.ref > 0):
            a = f"click({format_ref(e.text if ref_mode == 'text' else e.ref, ref_mode)})"
            if a not in allowed:
                allowed.append(a)
    return Observation(task, elements, "\n".join(lines), allowed)


class MiniWoBEnv:
    """One MiniWoB++ task in its own browser context.

    reset(seed) -> Observation; step(action text) -> (Observation, reward, done, info).
    reward is MiniWoB's raw (not time-scaled) reward once the page ends the episode (+1 success,
    -1 failure, partial credit in between), else 0. Every step counts toward max_steps, invalid
    ones too; reaching it ends the episode with done=True, success=False, info["truncated"]=True.
    """

    def __init__(self, browser, task: str = "click-button", ref_mode: str = "text",
                 max_steps: int = 10, episode_max_time_s: float | None = None,
                 step_timeout_s: float = 5.0):
        if ref_mode not in ("text", "id"):
            raise ValueError(f"unknown ref_mode {ref_mode!r}")
        page_file = TASK_DIR / f"{task}.html"
        if not page_file.is_file():
            raise ValueError(f"unknown MiniWoB task {task!r} (no {page_file})")
        self.task_name, self.ref_mode, self.max_steps = task, ref_mode, max_steps
        # None disables the page's own episode timer (in practice: ~24 days).
        self._timer_ms = MAX_TIMER_MS if episode_max_time_s is None else int(episode_max_time_s * 1000)
        self._context = getattr(browser, "browser", browser).new_context()
        self._context.set_default_timeout(step_timeout_s * 1000)
        self._page = self._context.new_page()
        load_ms = max(30_000, step_timeout_s * 1000)  # once per env; a busy machine is slow here
        self._page.goto(page_file.as_uri(), timeout=load_ms)
        self._page.wait_for_function("() => core.cover_div !== null", timeout=load_ms)  # onload ran
        self._obs: Observation | None = None
        self._done = True
        self._steps = 0

    def reset(self, seed: int) -> Observation:
        ready = self._page.evaluate(_RESET_JS, [seed, self._timer_ms])
        if not ready:
            self._page.wait_for_function("() => WOB_TASK_READY")
        self._done, self._steps = False, 0
        status = self._page.evaluate(_OBSERVE_JS)
        self._obs = self._observation(status)
        return self._obs

    def step(self, action: str) -> tuple[Observation, float, bool, dict]:
        info = {"success": False, "raw_reward": 0.0, "error": None, "reason": None,
                "truncated": False, "steps": self._steps}
        if self._obs is None or self._done:
            info["error"] = "the episode is over; call reset()"
            return self._with_error(self._obs_or_empty(), info["error"]), 0.0, True, info
        self._steps += 1
        info["steps"] = self._steps
        # With the page's timer on, the episode may have timed out since the last observation;
        # acting then would click MiniWoB's start cover and begin an unseeded episode.
        timed_out = self._timer_ms < MAX_TIMER_MS and self._page.evaluate("() => WOB_DONE_GLOBAL")
        if not timed_out:
            try:
                self._apply(parse_action(action, self.ref_mode))
            except (ActionError, PlaywrightError) as e:
                info["error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
        status = self._page.evaluate(_OBSERVE_JS)
        obs = self._observation(status)
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

    def close(self) -> None:
        try:
            self._context.close()
        except PlaywrightError:
            pass  # the browser is already gone

    # -- internals ---------------------------------------------------------------------------

    def _observation(self, status: dict) -> Observation:
        elements = _elements(status["elements"]) if status["elements"] is not None else []
        return make_observation(status["task"], elements, self.ref_mode)

    def _obs_or_empty(self) -> Observation:
        return self._obs or make_observation("", [], self.ref_mode)

    @staticmethod
    def _with_error(obs: Observation, message: str) -> Observation:
        return dataclasses.replace(obs, text=f"Error: {message}\n{obs.text}")

    def _apply(self, action: Action) -> None:
        page = self._page
        if action.kind == "press":
            page.keyboard.press(action.arg)
            return
        if action.kind == "scroll":
            page.mouse.move(*TASK_CENTER)
            page.mouse.wheel(0, SCROLL_PX if action.arg == "down" else -SCROLL_PX)
            return
        el = self._resolve(action)
        if action.kind == "select":
            if el.tag != "select" or el.ref <= 0:
                raise ActionError(f"element {self._describe(action.ref)} is not a select")
            if not page.evaluate(_SELECT_OPTION_JS, [el.ref, action.arg]):
                raise ActionError(f"element {self._describe(action.ref)} has no option {quote(action.arg)}")
            return
        if action.kind == "type" and not el.typeable:
            raise ActionError(f"element {self._describe(action.ref)} is not a textbox")
        page.mouse.click(*self._center(el))
        if action.kind == "type":
            page.evaluate(_SELECT_ALL_JS, el.ref)  # typing replaces the current value
            if action.arg:
                page.keyboard.type(action.arg)
            else:
                page.keyboard.press("Backspace")

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

    def _center(self, el: Element) -> tuple[float, float]:
        left, top, width, height = el.box
        x, y = left + width / 2, top + height / 2
        vp = self._page.viewport_size or {"width": 1280, "height": 720}
        if el.ref > 0 and not (0 <= x < vp["width"] and 0 <= y < vp["height"]):
            center = self._page.evaluate(_CENTER_JS, el.ref)
            if center:
                x, y = center
        return x, y
