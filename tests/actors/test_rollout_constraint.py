"""Decoding constraints and the prompt length guard of a rollout actor: the config key (and its
legacy form), what each step records, and prompts trimmed to fit the engine's context
(scripted engine and pages; the real engine's grammar decoding is in test_engine.py)."""

import pytest

from actors.config import RolloutConfig
from actors.decoding import Grammar, StepConstraint, constraint_mode
from actors.env.actions import action_grammar
from actors.episode import Round, fit_prompt, render_prompt
from buffer.wire.decode import decode
from buffer.wire.schema import encode
from tests.actors.test_rollout_loop import ScriptedSlot, browser, make_loop, tick_until  # noqa: F401

# ---- the config key ------------------------------------------------------------------------


@pytest.mark.parametrize("rollout, mode", [
    ({}, "choice"),
    ({"constraint": None, "constrained": None}, "choice"),  # RolloutConfig's defaults
    ({"constraint": "grammar"}, "grammar"),
    ({"constraint": "none"}, "none"),
    ({"constrained": True}, "choice"),
    ({"constrained": False}, "none"),
    ({"constraint": "choice", "constrained": True}, "choice"),
    ({"constraint": "none", "constrained": False}, "none"),
])
def test_constraint_key_and_its_legacy_form(rollout, mode):
    assert constraint_mode(RolloutConfig(**rollout)) == mode


@pytest.mark.parametrize("rollout", [{"constraint": "grammar", "constrained": True},
                                     {"constraint": "choice", "constrained": False},
                                     {"constraint": "none", "constrained": True}])
def test_conflicting_keys_name_both(rollout):
    with pytest.raises(ValueError, match=r"rollout\.constraint.*rollout\.constrained"):
        constraint_mode(RolloutConfig(**rollout))


def test_unknown_constraint_is_refused():
    with pytest.raises(ValueError, match="one of"):
        constraint_mode(RolloutConfig(constraint="json"))


def test_what_each_mode_decodes_under_and_records():
    allowed = ['click("a")', 'click("b")']
    assert StepConstraint("choice").for_page(allowed) == (allowed, "choice")
    assert StepConstraint("choice").for_page([]) == (None, "none")  # nothing to choose from
    assert StepConstraint("grammar", "id").for_page(allowed) == (Grammar(action_grammar("id")), "grammar")
    assert StepConstraint("none").for_page(allowed) == (None, "none")


@pytest.mark.parametrize("mode, allowed, constraint", [("choice", ['click("a")'], "choice"),
                                                        ("grammar", [], "grammar"),
                                                        ("none", [], "none")])
def test_steps_record_their_constraint_and_it_travels(browser, mode, allowed, constraint):  # noqa: F811
    loop, finished = make_loop(browser, [ScriptedSlot(length=2)], constraint=mode)
    tick_until(loop, lambda: finished, "an episode")
    steps = finished[0][0].steps
    assert [(s.constraint, s.allowed_actions) for s in steps] == [(constraint, allowed)] * 2
    traj = finished[0][0].finish(actor_id="a", env="e", reward=1.0, success=True, outcome="correct")
    back = decode(encode(traj))
    assert [s.constraint for s in back.steps] == [constraint] * 2
    # The grammar itself travels with the trajectory, for the learner to mask by it.
    assert back.grammar == (loop.constraint.grammar.ebnf if mode == "grammar" else None)
    assert mode != "grammar" or back.grammar == action_grammar(loop.constraint.ref_mode)

# ---- the prompt length guard ---------------------------------------------------------------


def chars(text):  # a tokenizer of one token per character
    return list(range(len(text)))


ROUNDS = [Round(f"obs {i}", f'click("{i}")') for i in range(1, 6)]


def test_a_prompt_that_fits_is_untouched():
    fitted = fit_prompt(chars, "Task: x", ROUNDS, 2, 2, limit=10_000)
    assert fitted.ids == chars(render_prompt("Task: x", ROUNDS, 2, 2))
    assert fitted.rounds_dropped == 0 and not fitted.truncated


def test_oldest_rounds_go_first_and_numbering_stays():
    full = render_prompt("Task: x", ROUNDS, 2, 2)  # 2 summarized (rounds 2, 3), 2 whole (4, 5)
    fitted = fit_prompt(chars, "Task: x", ROUNDS, 2, 2, limit=len(full) - 1)
    assert fitted.rounds_dropped == 1 and not fitted.truncated
    text = render_prompt("Task: x", ROUNDS, 2, 2, drop=1)
    assert len(fitted.ids) == len(text) <= len(full) - 1
    assert 'click("2")' not in text and 'click("3")' in text and "Round 4:" in text and "Round 5:" in text
    three = render_prompt("Task: x", ROUNDS, 2, 2, drop=3)
    assert "Previous actions" not in three and "Round 4:" not in three and "Round 5:\nobs 5" in three


def test_an_observation_too_long_alone_is_cut_at_its_tail():
    obs = "Task: click ok\n" + "button \"x\"\n" * 100
    fitted = fit_prompt(chars, obs, ROUNDS, -1, 0, limit=50)
    assert fitted.truncated and fitted.rounds_dropped == len(ROUNDS) and len(fitted.ids) <= 50


def test_the_loop_trims_long_prompts_and_counts_it(browser):  # noqa: F811
    loop, finished = make_loop(browser, [ScriptedSlot(length=4)], max_model_len=8 + 40)
    loop.engine.chat_prompt_ids = chars  # 40 characters left for the prompt
    tick_until(loop, lambda: finished, "an episode")
    assert loop.stats["prompts_trimmed"] > 0 and loop.stats["prompt_rounds_trimmed"] > 0
    assert all(len(s.prompt_ids) <= 40 for s in finished[0][0].steps)
