"""Action text grammar shared by envs and the constrained decoder (pure, no browser).

    click(REF)   type(REF, "text")   select(REF, "option")   press("key")   scroll(up|down)

REF is the element's visible text in double quotes in ref_mode "text" (`click("submit")`), or
its integer ref in ref_mode "id" (`click(12)`). Strings use `\\"` and `\\\\` escapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REF_MODES = ("text", "id")
_STR = r'"((?:[^"\\]|\\.)*)"'
_INT = r"(-?\d+)"
_SCROLL = re.compile(r'scroll\(\s*"?(up|down)"?\s*\)')
_PRESS = re.compile(rf"press\(\s*{_STR}\s*\)")


class ActionError(ValueError):
    """The action text does not parse (message says why)."""


@dataclass(frozen=True)
class Action:
    kind: str  # click | type | select | press | scroll
    ref: str | int | None = None  # element text (ref_mode "text") or integer ref ("id")
    arg: str | None = None  # text to type, option to select, key to press, or up/down


def quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(body: str) -> str:
    return re.sub(r"\\(.)", r"\1", body)


def _ref_patterns(ref_mode: str) -> dict[str, re.Pattern]:
    ref = _STR if ref_mode == "text" else _INT
    return {
        "click": re.compile(rf"click\(\s*{ref}\s*\)"),
        "type": re.compile(rf"type\(\s*{ref}\s*,\s*{_STR}\s*\)"),
        "select": re.compile(rf"select\(\s*{ref}\s*,\s*{_STR}\s*\)"),
    }


_PATTERNS = {mode: _ref_patterns(mode) for mode in REF_MODES}


def parse_action(text: str, ref_mode: str = "text") -> Action:
    """Parse one action; raises ActionError on anything else."""
    if ref_mode not in REF_MODES:
        raise ValueError(f"unknown ref_mode {ref_mode!r}")
    s = text.strip()
    if m := _SCROLL.fullmatch(s):
        return Action("scroll", arg=m.group(1))
    if m := _PRESS.fullmatch(s):
        key = _unquote(m.group(1))
        if not key:
            raise ActionError("press() needs a key")
        return Action("press", arg=key)
    for kind, pattern in _PATTERNS[ref_mode].items():
        if m := pattern.fullmatch(s):
            ref = _unquote(m.group(1)) if ref_mode == "text" else int(m.group(1))
            arg = _unquote(m.group(2)) if kind != "click" else None
            return Action(kind, ref=ref, arg=arg)
    verb = s.split("(", 1)[0].strip()
    if verb in _PATTERNS[ref_mode]:
        want = "a quoted element text" if ref_mode == "text" else "an integer element ref"
        raise ActionError(f"cannot parse {s[:80]!r}: {verb}() takes {want}")
    raise ActionError(
        f"cannot parse {s[:80]!r}; expected click, type, select, press or scroll"
    )


def format_ref(ref: str | int, ref_mode: str) -> str:
    return quote(str(ref)) if ref_mode == "text" else str(int(ref))


def format_action(action: Action, ref_mode: str = "text") -> str:
    """Inverse of parse_action."""
    if action.kind == "scroll":
        return f"scroll({action.arg})"
    if action.kind == "press":
        return f"press({quote(action.arg or '')})"
    ref = format_ref(action.ref, ref_mode)
    if action.kind == "click":
        return f"click({ref})"
    return f"{action.kind}({ref}, {quote(action.arg or '')})"
