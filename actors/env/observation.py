"""What a MiniWoB++ page looks like to the policy: elements with stable refs, rendered as a compact
list (or replaced by an accessibility tree's text), and the click actions valid on it.

Pure: builds observations (Element and Observation are defined in actors/env/base.py) from what
the page's OBSERVE_JS returned; no browser here.
"""

from __future__ import annotations

from actors.env.actions import format_ref, quote
from actors.env.base import Element, Observation

__all__ = ["Element", "Observation", "make_observation", "parse_elements", "render_element"]

_TYPEABLE_INPUTS = {"text", "password", "email", "number", "search", "tel", "url", "date",
                    "time", "datetime-local", "month", "week"}


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


def parse_elements(raw: list[dict]) -> list[Element]:
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


def make_observation(task: str, elements: list[Element], ref_mode: str,
                     axtree: str | None = None) -> Observation:
    """The policy's view: the task and the element list, or with `axtree` (an accessibility
    snapshot's text) the task and that tree. Allowed actions always come from `elements`."""
    if axtree is None:
        lines = [f"Task: {task}", "Elements:"] + [render_element(e, ref_mode) for e in elements]
    else:
        lines = [f"Task: {task}", "Page:", axtree]
    allowed = []
    for e in elements:
        if e.clickable and e.text and (ref_mode == "text" or e.ref > 0):
            a = f"click({format_ref(e.text if ref_mode == 'text' else e.ref, ref_mode)})"
            if a not in allowed:
                allowed.append(a)
    return Observation(task, elements, "\n".join(lines), allowed)
