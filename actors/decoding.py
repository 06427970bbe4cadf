"""What a rollout step's decoding is constrained by (`rollout.constraint`):

- "choice": the page's valid actions (Observation.allowed_actions) as a vLLM choice constraint;
  a page with none decodes unconstrained. The step records the choices, so the learner can
  recompute the masked distribution (learner/scoring/masked_logprobs.py).
- "grammar": the action language itself (actors/env/actions.action_grammar, by ref_mode) as a vLLM
  grammar constraint (EBNF) compiled by xgrammar. The step records constraint "grammar" and no allowed
  actions; the trajectory carries the EBNF text (wire field `grammar`), which the learner compiles
  with xgrammar to score the same masked distribution (learner/scoring/grammar_mask.py).
- "none": unconstrained.

The old boolean `rollout.constrained` still works (true: choice, false: none).
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.env.actions import action_grammar

CONSTRAINTS = ("choice", "grammar", "none")


@dataclass(frozen=True)
class Grammar:
    """An EBNF grammar constraint (the engine's `constraint` is a choice list, a Grammar, or
    None)."""

    ebnf: str


def constraint_mode(rollout: dict) -> str:
    """The rollout config's constraint; the legacy `constrained` bool maps to choice / none."""
    new, old = rollout.get("constraint"), rollout.get("constrained")
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

    def for_page(self, allowed_actions: list[str]) -> tuple[list[str] | Grammar | None, str]:
        """(what the engine decodes under, the step's `constraint` label)."""
        if self.mode == "choice":
            return (allowed_actions, "choice") if allowed_actions else (None, "none")
        if self.mode == "grammar":
            return self.grammar, "grammar"
        return None, "none"


def structured_outputs(constraint: list[str] | Grammar | None):
    """vLLM's StructuredOutputsParams for an engine constraint (None: unconstrained)."""
    if not constraint:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if isinstance(constraint, Grammar):
        return StructuredOutputsParams(grammar=constraint.ebnf)
    return StructuredOutputsParams(choice=list(constraint))
