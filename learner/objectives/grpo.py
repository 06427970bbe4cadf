"""GRPO: advantages from the returns of the episodes of one group (the same task instance), a
token-level clipped ratio against the behaviour logprobs, optional KL to a frozen reference.

- Advantage of an episode: (R - mean_g) / (std_g + eps) over its group g, std with Bessel's
  correction (torch.std, as TRL and verl do). A group of one episode gets 0. Every step (turn)
  of an episode, and every token of its response, carries the episode's advantage.
- Per-token loss: the PPO clipped surrogate (+ kl_coef × k3 KL, see ppo.py), aggregated by
  `length_norm`:
    token     sum over all response tokens / their count (DAPO's token-level mean)
    sequence  mean over each response's tokens, then mean over responses (the GRPO paper)
    dr_grpo   sum over each response's tokens / max_len, then mean over responses, and
              advantages without the std division (Dr. GRPO, Liu et al. 2025); max_len is a
              constant, the decoder's max_tokens.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import torch

from learner.config import LENGTH_NORMS, GRPOConfig
from learner.objectives.items import TrainItem
from learner.objectives.ppo import (
    clipped_surrogate,
    frozen_reference,
    k3_kl,
    masked_mean,
    ratio_stats,
    reference_logprobs,
)
from learner.scoring.masked_logprobs import collate_rollouts, response_logprobs


def group_advantages(returns: torch.Tensor, group_ids: Sequence[Hashable], *, std_norm: bool = True,
                     eps: float = 1e-6) -> torch.Tensor:
    """One return per episode [N] and its group id → advantages [N]."""
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(group_ids):
        members[g].append(i)
    adv = torch.zeros_like(returns, dtype=torch.float32)
    for idx in members.values():
        if len(idx) < 2:
            continue
        r = returns[idx].float()
        centered = r - r.mean()
        adv[idx] = centered / (r.std() + eps) if std_norm else centered
    return adv


def step_advantages(items: list[TrainItem], *, length_norm: str = "token", eps: float = 1e-6) -> torch.Tensor:
    """Sampled steps (each with traj_id, group_id, return) → the advantage of each step [N].
    Each episode counts once in its group however many of its steps are in `items`."""
    episodes: dict[str, tuple[Hashable, float]] = {}
    for it in items:
        episodes.setdefault(it.traj_id, (it.group_id, it.ret))
    traj_ids = list(episodes)
    returns = torch.tensor([episodes[t][1] for t in traj_ids])
    adv = group_advantages(returns, [episodes[t][0] for t in traj_ids],
                           std_norm=length_norm != "dr_grpo", eps=eps)
    by_traj = dict(zip(traj_ids, adv.tolist()))
    return torch.tensor([by_traj[it.traj_id] for it in items])


def grpo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor,
              advantages: torch.Tensor, *, clip_eps: float = 0.2, length_norm: str = "token",
              max_len: int | None = None, kl_coef: float = 0.0, ref_logprobs: torch.Tensor | None = None,
              entropy_coef: float = 0.0, entropy: torch.Tensor | None = None,
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO loss and its parts. logprobs, old_logprobs, mask, ref_logprobs, entropy: [B, R] per
    response token; advantages: [B] per response. loss = agg(surrogate + kl_coef * kl)
    - entropy_coef * entropy (entropy and kl are also reported as token means)."""
    if length_norm not in LENGTH_NORMS:
        raise ValueError(f"length_norm must be one of {LENGTH_NORMS}, got {length_norm!r}")
    if length_norm == "dr_grpo" and not max_len:
        raise ValueError("length_norm='dr_grpo' needs max_len (the decoder's max_tokens)")
    policy_tok, ratio, clipped = clipped_surrogate(logprobs, old_logprobs, advantages[:, None], clip_eps)
    kl_tok = k3_kl(logprobs, ref_logprobs) if ref_logprobs is not None else torch.zeros_like(policy_tok)
    per_token = policy_tok + kl_coef * kl_tok

    if length_norm == "token":
        agg = masked_mean
    elif length_norm == "sequence":
        def agg(x, m):
            return ((x * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    else:
        def agg(x, m):
            return ((x * m).sum(-1) / max_len).mean()

    ent = masked_mean(entropy, mask) if entropy is not None else per_token.new_zeros(())
    loss = agg(per_token, mask) - entropy_coef * ent
    stats = {"loss": loss, "policy_loss": agg(policy_tok, mask), "kl": masked_mean(kl_tok, mask),
             "entropy": ent, "advantage_mean": advantages.mean(), **ratio_stats(ratio, clipped, mask)}
    return loss, {k: v.detach() for k, v in stats.items()}


class GRPO:
    """The learner's GRPO objective: draws whole groups (`buffer.group_size` episodes of one task
    instance), one update per draw. Each step's new priority is |its episode's advantage|."""

    sampling = "groups"

    def __init__(self, cfg: GRPOConfig, tokenizer, *, max_len: int):
        self.cfg, self.tokenizer, self.max_len = cfg, tokenizer, max_len
        self.ref = None

    def wrap(self, model):
        if self.cfg.kl_coef > 0:
            self.ref = frozen_reference(model)
        return model

    def loss(self, engine, items: list[TrainItem]):
        c = self.cfg
        norm = c.length_norm
        device = next(engine.parameters()).device
        batch = collate_rollouts(items, self.tokenizer, max_len=self.max_len).to(device)
        logits = engine(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logprobs, entropy = response_logprobs(logits, batch)
        adv = step_advantages(items, length_norm=norm, eps=c.std_eps).to(device)
        weighted = adv * torch.tensor([it.weight for it in items], device=device)
        loss, stats = grpo_loss(
            logprobs, batch.old_logprobs, batch.response_mask, weighted, clip_eps=c.clip_eps,
            length_norm=norm, max_len=c.max_response_len, kl_coef=c.kl_coef,
            ref_logprobs=reference_logprobs(self.ref, batch, engine), entropy_coef=c.entropy_coef,
            entropy=entropy)
        return loss, stats, adv.abs(), int(batch.attention_mask.sum())
