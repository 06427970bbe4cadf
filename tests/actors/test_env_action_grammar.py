"""The decoding grammar (actions.action_grammar) against the action parser it is derived from:
strings the grammar admits parse (and are canonical), canonical actions are admitted, junk is
not. Admitted strings are drawn by random walks over xgrammar's token mask on the embedded
tokenizer — the same matcher vLLM decodes with."""

import random

import pytest
from transformers import AutoTokenizer

from actors.env.actions import Action, action_grammar, format_action, parse_action

xgr = pytest.importorskip("xgrammar")


@pytest.fixture(scope="module")
def tokenizer(model_path):
    return AutoTokenizer.from_pretrained(model_path)


def admits(grammar: str, text: str) -> bool:
    from xgrammar.testing import _is_grammar_accept_string

    return _is_grammar_accept_string(xgr.Grammar.from_ebnf(grammar), text)


def random_admitted(tokenizer, grammar: str, n: int, seed: int) -> list[str]:
    """n strings the grammar admits: uniform random tokens among those its mask allows."""
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    ctx = xgr.GrammarCompiler(info).compile_grammar(grammar)
    eos, rng, out = tokenizer.eos_token_id, random.Random(seed), []
    bitmask = xgr.allocate_token_bitmask(1, len(tokenizer))
    for _ in range(n):
        matcher = xgr.GrammarMatcher(ctx, override_stop_tokens=[eos])
        ids = []
        while not matcher.is_terminated():
            matcher.fill_next_token_bitmask(bitmask)
            words = bitmask[0].tolist()
            allowed = [i for i in range(len(tokenizer)) if (words[i // 32] >> (i % 32)) & 1]
            # Stop only now and then, so walks also reach long strings.
            t = eos if eos in allowed and rng.random() < 0.3 else rng.choice([a for a in allowed if a != eos] or [eos])
            assert matcher.accept_token(t)
            if t != eos:
                ids.append(t)
        out.append(tokenizer.decode(ids))
    return out


@pytest.mark.parametrize("ref_mode", ["text", "id"])
def test_every_admitted_string_parses_and_is_canonical(tokenizer, ref_mode):
    samples = random_admitted(tokenizer, action_grammar(ref_mode, max_chars=12), 60, seed=len(ref_mode))
    verbs = set()
    for s in samples:
        action = parse_action(s, ref_mode)
        assert format_action(action, ref_mode) == s
        verbs.add(action.kind)
    assert verbs == {"click", "type", "select", "press", "scroll"}  # the walks cover the language


@pytest.mark.parametrize("action, ref_mode", [
    (Action("click", ref="submit"), "text"),
    (Action("click", ref='say "hi" \\ there'), "text"),
    (Action("click", ref="café ✓"), "text"),
    (Action("type", ref="Username", arg=""), "text"),
    (Action("select", ref="Color", arg="Red, dark"), "text"),
    (Action("press", arg="Enter"), "text"),
    (Action("scroll", arg="down"), "text"),
    (Action("click", ref=31), "id"),
    (Action("type", ref=7, arg="bob"), "id"),
])
def test_canonical_actions_are_admitted(action, ref_mode):
    assert admits(action_grammar(ref_mode), format_action(action, ref_mode))


@pytest.mark.parametrize("junk", [
    "", "junk", "click", 'click("a"', 'click("a")x', 'click("a" )', 'click( "a")', "click(a)",
    'type("a","b")', 'type("a")', 'press("")', 'scroll("up")', "scroll(left)", "click(12)",
    'click("line\nbreak")', 'click("' + "x" * 33 + '")', 'click("a") click("b")',
])
def test_the_grammar_rejects_junk(junk):
    assert not admits(action_grammar("text"), junk)


def test_id_mode_takes_positive_integer_refs_only():
    grammar = action_grammar("id")
    assert admits(grammar, "click(12)")
    for junk in ['click("ok")', "click(0)", "click(-3)", "click(012)", "click(1234567)"]:
        assert not admits(grammar, junk)
