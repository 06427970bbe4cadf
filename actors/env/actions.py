"""Action text grammar shared by envs and the constrained decoder (pure, no browser).

    click(REF)   type(REF, "text")   select(REF, "option")   press("key")   scroll(up|down)

REF is the element's visible text in double quotes in ref_mode "text" (`click("submit")`), or
its integer ref in ref_mode "id" (`click(12)`). Strings use `\\"` and `\\\\` escapes.

One table of verbs and argument kinds (`SIGNATURES`) builds both the parser's regexes and the
decoding grammar (`action_grammar`), so the two cannot drift. The parser is lenient (any spacing,
any escape, `scroll("up")`); the grammar admits only the canonical spelling `format_action`
writes, with strings of at most `max_chars` characters — a sublanguage of what the parser
accepts, and exactly what format_action(parse_action(s)) gives back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REF_MODES = ("text", "id")
SIGNATURES = {  # verb -> argument kinds: ref (text or id by ref_mode), str, key (a non-empty str), dir
    "click": ("ref",),
    "type": ("ref", "str"),
    "select": ("ref", "str"),
    "press": ("key",),
    "scroll": ("dir",),
}
GRAMMAR_MAX_CHARS = 32


@dataclass(frozen=True)
class _Lexicon:
    """How the parser spells each piece (regex fragments, one capture group per argument)."""

    open: str  # after "verb("
    sep: str  # between arguments
    close: str  # before ")"
    string: str
    integer: str
    direction: str


_PARSE = _Lexicon(open=r"\(\s*", sep=r"\s*,\s*", close=r"\s*\)", string=r'"((?:[^"\\]|\\.)*)"',
                  integer=r"(-?\d+)", direction=r'"?(up|down)"?')


def _verb_regex(verb: str, ref_mode: str) -> str:
    piece = {"ref": _PARSE.string if ref_mode == "text" else _PARSE.integer, "str": _PARSE.string,
             "key": _PARSE.string, "dir": _PARSE.direction}
    args = _PARSE.sep.join(piece[kind] for kind in SIGNATURES[verb])
    return re.escape(verb) + _PARSE.open + args + _PARSE.close


def _chain(name: str, item: str, n: int) -> list[str]:
    """Rules name0 .. name{n}: up to i items. A chain of optional rules rather than a bounded
    repetition item{0,n}: xgrammar precomputes masks for the chain's states, and decoding under
    it ran ~2x faster than under the same language written as a regex with {0,32} (measured)."""
    return [f"{name}0 ::= \"\""] + [f'{name}{i} ::= "" | {item} {name}{i - 1}' for i in range(1, n + 1)]


def action_grammar(ref_mode: str = "text", max_chars: int = GRAMMAR_MAX_CHARS) -> str:
    """The decoding grammar (EBNF for vLLM structured outputs `grammar`, compiled by xgrammar):
    every action of SIGNATURES in its canonical spelling, strings of 0..max_chars characters
    (keys 1..max_chars) without control characters and with only the escapes quote() writes,
    refs by `ref_mode` (ids: positive, at most 6 digits)."""
    if ref_mode not in REF_MODES:
        raise ValueError(f"unknown ref_mode {ref_mode!r}")
    piece = {"ref": "str" if ref_mode == "text" else "int", "str": "str", "key": "key", "dir": "dir"}
    verbs = [f'"{verb}(" ' + ' ", " '.join(piece[k] for k in kinds) + ' ")"' for verb, kinds in SIGNATURES.items()]
    rules = [
        "root ::= " + " | ".join(f"({v})" for v in verbs),
        f'str ::= "\\"" s{max_chars} "\\""',
        f'key ::= "\\"" c s{max_chars - 1} "\\""',
        r'c ::= [^"\\\x00-\x1f] | "\\" ["\\]',
        'dir ::= "up" | "down"',
        "int ::= [1-9] d5",
        *_chain("s", "c", max_chars),
        *_chain("d", "[0-9]", 5),
    ]
    return "\n".join(rules) + "\n"


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


_PATTERNS = {mode: {v: re.compile(_verb_regex(v, mode)) for v in SIGNATURES} for mode in REF_MODES}


def parse_action(text: str, ref_mode: str = "text") -> Action:
    """Parse one action; raises ActionError on anything else."""
    if ref_mode not in REF_MODES:
        raise ValueError(f"unknown ref_mode {ref_mode!r}")
    s = text.strip()
    for kind, pattern in _PATTERNS[ref_mode].items():
        if not (m := pattern.fullmatch(s)):
            continue
        values = dict(zip(SIGNATURES[kind], m.groups()))
        ref = values.get("ref")
        if ref is not None:
            ref = _unquote(ref) if ref_mode == "text" else int(ref)
        if kind == "scroll":
            return Action(kind, arg=values["dir"])
        if kind == "press":
            key = _unquote(values["key"])
            if not key:
                raise ActionError("press() needs a key")
            return Action(kind, arg=key)
        arg = _unquote(values["str"]) if "str" in values else None
        return Action(kind, ref=ref, arg=arg)
    verb = s.split("(", 1)[0].strip()
    if verb in ("click", "type", "select"):
        want = "a quoted element text" if ref_mode == "text" else "an integer element ref"
        raise ActionError(f"cannot parse {s[:80]!r}: {verb}() takes {want}")
    raise ActionError(
        f"cannot parse {s[:80]!r}; expected click, type, select, press or scroll"
    )


def format_ref(ref: str | int, ref_mode: str) -> str:
    return quote(str(ref)) if ref_mode == "text" else str(int(ref))


def format_action(action: Action, ref_mode: str = "text") -> str:
    """Inverse of parse_action (the canonical spelling, the one action_grammar admits)."""
    if action.kind == "scroll":
        return f"scroll({action.arg})"
    if action.kind == "press":
        return f"press({quote(action.arg or '')})"
    ref = format_ref(action.ref, ref_mode)
    if action.kind == "click":
        return f"click({ref})"
    return f"{action.kind}({ref}, {quote(action.arg or '')})"
