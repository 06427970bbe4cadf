"""The learner's objectives behind one small interface, chosen by the algorithm config's class
(learner/config.py: SFTConfig, PPOConfig, GRPOConfig; `algorithm=NAME` in Hydra).

An objective has
  sampling      "steps" (single steps: SFT) or "groups" (whole episodes grouped by task
                instance: GRPO; PPO draws groups of one)
  wrap(model)   the module DeepSpeed trains (PPO adds its value head; a KL term keeps a frozen
                copy of the model it is given)
  loss(engine, items) → (loss, metrics, new priorities per item or None, tokens in the batch)
"""

from __future__ import annotations

from learner.config import AlgorithmConfig
from learner.objectives.grpo import GRPO
from learner.objectives.ppo import PPO
from learner.objectives.sft import SFT

OBJECTIVES = {"sft": SFT, "ppo": PPO, "grpo": GRPO}


def make_objective(cfg: AlgorithmConfig, tokenizer, *, max_len: int):
    if cfg.name not in OBJECTIVES:
        raise ValueError(f"algorithm.name must be one of {sorted(OBJECTIVES)}, got {cfg.name!r}")
    return OBJECTIVES[cfg.name](cfg, tokenizer, max_len=max_len)
