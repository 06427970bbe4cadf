"""PPO for multi-turn episodes: one action (a response of several tokens) per turn.

- Value head: a scalar on the LM's last hidden state; a turn's value is read at its last prompt
  token (the state before the action is written), so an episode has one value per turn.
- GAE over the turns of an episode with per-turn rewards; the last turn bootstraps from 0.
- Policy loss: the clipped surrogate of each response token against the behaviour logprobs the
  decoder reported (masked ones where decoding was constrained, see masked_logprobs), every
  token of a turn carrying that turn's advantage; mean over the batch's response tokens.
- KL to a frozen reference: Schulman's k3 estimator per token, exp(r) - r - 1 with
  r = ref_logprob - logprob: non-negative, unbiased for KL(pi || ref) on samples from pi (ours
  come from the behaviour policy, a small bias the clip keeps bounded).
- clip_fraction: the share of response tokens whose clipped branch is the one taken (their
  gradient is zero); approx_kl: k3 of the behaviour policy from the current one.

NOT guaranteed: GAE needs every turn of an episode; `pack_episodes` checks that the turns it gets
are 0..n-1 without gaps but cannot know that none is missing at the end.
"""

from __future__ import annotations

import copy
from collections import defaultdict

import torch
from torch import nn

from learner.config import PPOConfig
from learner.objectives.items import TrainItem
from learner.scoring.masked_logprobs import collate_rollouts, response_logprobs


class ValueHeadModel(nn.Module):
    """A HF causal LM with a scalar value head on its last hidden state."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        self.value_head = nn.Linear(lm.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)  # values start at 0; the head learns from returns
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """→ (logits [B, T, V], values [B, T])."""
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = out.hidden_states[-1]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return out.logits, values


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def whiten(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Advantage normalization over the batch (CleanRL's norm_adv)."""
    return (x - x.mean()) / (x.std() + eps) if x.numel() > 1 else x - x.mean()


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1."""
    r = ref_logprobs - logprobs
    return r.exp() - r - 1.0


def clipped_surrogate(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                      clip_eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token PPO loss max(-A r, -A clip(r, 1-eps, 1+eps)) → (loss, ratio, clipped)."""
    ratio = (logprobs - old_logprobs).exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    return torch.maximum(unclipped, clipped), ratio, clipped > unclipped


def ratio_stats(ratio: torch.Tensor, clipped: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    ratio, on = ratio.detach(), mask > 0
    log_ratio = ratio.log()
    return {
        "clip_fraction": masked_mean(clipped.float(), mask),
        "ratio_mean": masked_mean(ratio, mask),
        "ratio_min": ratio[on].min() if on.any() else ratio.new_tensor(1.0),
        "ratio_max": ratio[on].max() if on.any() else ratio.new_tensor(1.0),
        "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask),
    }


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over turns. rewards, values, mask: [E, T] for E episodes padded to T turns (mask 0
    past an episode's last turn, which is terminal). → (advantages, returns), 0 where padded."""
    E, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(E, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        if t + 1 < T:
            next_mask, next_value = mask[:, t + 1], values[:, t + 1]
        else:
            next_mask, next_value = torch.zeros_like(running), torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        running = (delta + gamma * lam * next_mask * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def pack_episodes(items: list[TrainItem]) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps → (index [E, T] into items, -1 where padded; mask [E, T]), turns in step order."""
    turns: dict[str, dict[int, int]] = defaultdict(dict)
    for i, it in enumerate(items):
        turns[it.traj_id][it.step_index] = i
    T = max(len(t) for t in turns.values())
    index = torch.full((len(turns), T), -1, dtype=torch.long)
    for e, (traj_id, by_step) in enumerate(turns.items()):
        if sorted(by_step) != list(range(len(by_step))):
            raise ValueError(f"episode {traj_id}: turns {sorted(by_step)} are not 0..n-1 (GAE needs all)")
        index[e, :len(by_step)] = torch.tensor([by_step[s] for s in range(len(by_step))])
    return index, (index >= 0).float()


def turn_advantages(items: list[TrainItem], values: torch.Tensor, gamma: float,
                    lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step (advantages, returns) [N] for whole episodes; values [N] per step (detached)."""
    index, mask = pack_episodes(items)
    safe = index.clamp(min=0)
    rewards = torch.tensor([it.reward for it in items], dtype=values.dtype)[safe] * mask
    adv, ret = gae(rewards, values.detach()[safe] * mask, mask, gamma, lam)
    out_adv, out_ret = torch.zeros_like(values), torch.zeros_like(values)
    on = index >= 0
    out_adv[index[on]], out_ret[index[on]] = adv[on], ret[on]
    return out_adv, out_ret


def ppo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor,
             advantages: torch.Tensor, values: torch.Tensor, returns: torch.Tensor, *,
             clip_eps: float = 0.2, value_coef: float = 0.5, entropy_coef: float = 0.0,
             entropy: torch.Tensor | None = None, kl_coef: float = 0.0,
             ref_logprobs: torch.Tensor | None = None, old_values: torch.Tensor | None = None,
             value_clip: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO loss and its parts.

    logprobs, old_logprobs, mask, entropy, ref_logprobs: [B, R] per response token;
    advantages, values, returns, old_values: [B] per turn. ref_logprobs: the frozen reference's
    logprobs of the same tokens under the same mask (masked_logprobs.response_logprobs).
    loss = policy + value_coef * value - entropy_coef * entropy + kl_coef * kl.
    """
    policy_tok, ratio, clipped = clipped_surrogate(logprobs, old_logprobs, advantages[:, None], clip_eps)
    policy = masked_mean(policy_tok, mask)

    value_err = (values - returns) ** 2
    if value_clip is not None and old_values is not None:
        v_clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
        value_err = torch.maximum(value_err, (v_clipped - returns) ** 2)
    value = 0.5 * value_err.mean()

    ent = masked_mean(entropy, mask) if entropy is not None else policy.new_zeros(())
    kl = masked_mean(k3_kl(logprobs, ref_logprobs), mask) if ref_logprobs is not None else policy.new_zeros(())
    loss = policy + value_coef * value - entropy_coef * ent + kl_coef * kl
    stats = {"loss": loss, "policy_loss": policy, "value_loss": value, "entropy": ent, "kl": kl,
             "value_mean": values.mean(), "return_mean": returns.mean(),
             **ratio_stats(ratio, clipped, mask)}
    return loss, {k: v.detach() for k, v in stats.items()}


def frozen_reference(model: nn.Module) -> nn.Module:
    """A frozen copy of the starting policy, for the KL term."""
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def reference_logprobs(ref: nn.Module | None, batch, like: nn.Module) -> torch.Tensor | None:
    """The frozen reference's logprobs of the batch's responses. The reference was copied before
    DeepSpeed moved (and, under bf16, cast) the policy: it follows the policy `like` on first use."""
    if ref is None:
        return None
    want = next(like.parameters())
    have = next(ref.parameters())
    if (have.device, have.dtype) != (want.device, want.dtype):
        ref.to(device=want.device, dtype=want.dtype)
    with torch.no_grad():
        logits = ref(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return response_logprobs(logits, batch)[0]


class PPO:
    """The learner's PPO objective: draws whole episodes (groups of one), one update per draw.
    Values at sampling time are the current model's (detached): the actors do not run the
    value head, so value clipping compares against this forward's own values."""

    sampling = "groups"

    def __init__(self, cfg: PPOConfig, tokenizer, *, max_len: int):
        self.cfg, self.tokenizer, self.max_len = cfg, tokenizer, max_len
        self.ref: nn.Module | None = None

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.cfg.kl_coef > 0:
            self.ref = frozen_reference(model)
        return ValueHeadModel(model)

    def loss(self, engine, items: list[TrainItem]):
        c = self.cfg
        device = next(engine.parameters()).device
        batch = collate_rollouts(items, self.tokenizer, max_len=self.max_len).to(device)
        logits, values_all = engine(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        logprobs, entropy = response_logprobs(logits, batch)
        values = values_all[torch.arange(len(items), device=device), batch.value_index].float()
        # GAE runs over a few turns per episode: on the CPU, where the episode index is built.
        adv, returns = (t.to(device) for t in turn_advantages(
            items, values.detach().cpu(), c.gamma, c.lam))
        priorities = adv.abs()
        if c.norm_adv:
            adv = whiten(adv)
        adv = adv * torch.tensor([it.weight for it in items], device=device)
        loss, stats = ppo_loss(
            logprobs, batch.old_logprobs, batch.response_mask, adv, values, returns,
            clip_eps=c.clip_eps, value_coef=c.value_coef,
            entropy_coef=c.entropy_coef, entropy=entropy, kl_coef=c.kl_coef,
            ref_logprobs=reference_logprobs(self.ref, batch, engine), old_values=values.detach(),
            value_clip=c.value_clip)
        return loss, stats, priorities, int(batch.attention_mask.sum())
