"""What a rollout step's decoding is constrained by (`rollout.constraint`):

- "choice": the page's valid actions (Observation.allowed_actions) as a vLLM choice constraint;
  a page with none decodes unconstrained. The step records the choices, so the learner can
  recompute the masked distribution (learner/scoring/masked_logprobs.py).
- "grammar": the action language itself (actors/env/actions.action_grammar, by ref_mode) as a vLLM
  grammar constraint (EBNF) compiled by xgrammar. The step records constraint "grammar" and no allowed
  actions; the trajectory carries the EBNF text (wire field `grammar`), which the learner compiles
  with xgrammar to score the same masked distribution (learner/scoring/grammar_mask.py).
- "none": unconstrained.

The old boolean `rollout.constrained` still works (true: choice, false: none). What the engine
takes (a choice list, a Grammar, None) is defined in actors/engine/base.py; how vLLM is asked for
it, in actors/engine/sampling.py.

NOT guaranteed: that a page's choices are all actions the env can carry out (the env reports an
impossible one as an error observation).
"""

from __future__ import annotations

from actors.config import RolloutConfig
from actors.engine.base import Constraint, Grammar
from actors.env.actions import action_grammar

CONSTRAINTS = ("choice", "grammar", "none")


def constraint_mode(rollout: RolloutConfig) -> str:
    """The rollout config's constraint; the legacy `constrained` bool maps to choice / none."""
    new, old = rollout.constraint, rollout.constrained
    legacy = None if old is None else ("choice" if old else "none")
    if new is not None and legacy is not None and new != legacy:
        raise ValueError(f"rollout.constraint={new!r} conflicts with the legacy rollout.constrained={old!r}; "
                         "set only rollout.constraint")
    mode = new if new is not None else (legacy or "choice")
    if mode not in CONSTRAINTS:
        raise ValueError(f"rollout.constraint must be one of {CONSTRAINTS}, got {mode!r}")
    return mode


class StepConstraint:
    """Per step: the engine's constraint and what the step records (constraint, allowed_actions)."""

    def __init__(self, mode: str, ref_mode: str = "text"):
        self.mode, self.ref_mode = mode, ref_mode
        self.grammar = Grammar(action_grammar(ref_mode)) if mode == "grammar" else None

    def for_page(self, allowed_actions: list[str]) -> tuple[Constraint, str]:
        """(what the engine decodes under, the step's `constraint` label)."""
        if self.mode == "choice":
            return (allowed_actions, "choice") if allowed_actions else (None, "none")
        if self.mode == "grammar":
            return self.grammar, "grammar"
        return None, "none"

