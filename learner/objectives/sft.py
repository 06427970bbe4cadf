"""SFT-on-success, as WebGym does it: weighted cross-entropy on the response tokens of steps
from successful episodes (the shard's success filter picks them).

The target is the action's text tokenized canonically plus end-of-turn, not the token path the
constrained decoder happened to sample: a choice constraint lets vLLM spell `click("okay")` in
many tokenizations, and training on the canonical one is what fine-tuning on text (WebGym with
LLaMA-Factory) does. `target="sampled"` trains on the sampled ids instead.

`mask_history`: the prompt already holds earlier turns as text and is never in the loss, so the
loss is on the last turn only by construction; the option exists for prompts that will carry
earlier assistant turns as tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from learner.config import SFTConfig
from learner.objectives.items import TrainItem

IGNORE = -100


def collate(items: list[TrainItem], tokenizer, *, target: str = "text", max_len: int = 1024):
    """Items from the shard → input_ids, attention_mask, labels, per-sequence loss weights."""
    eos = tokenizer.eos_token_id
    seqs, labels, weights = [], [], []
    for it in items:
        prompt = [int(t) for t in it.prompt_ids]
        if target == "text":
            response = tokenizer.encode(it.action, add_special_tokens=False) + [eos]
        elif target == "sampled":
            response = [int(t) for t in it.response_ids]
        else:
            raise ValueError(f"algorithm.target must be 'text' or 'sampled', got {target!r}")
        seq = (prompt + response)[-max_len:]
        lab = ([IGNORE] * len(prompt) + response)[-max_len:]
        seqs.append(seq)
        labels.append(lab)
        weights.append(it.weight)
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    label_ids = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, lab) in enumerate(zip(seqs, labels)):
        input_ids[i, :len(s)] = torch.tensor(s)
        label_ids[i, :len(lab)] = torch.tensor(lab)
        mask[i, :len(s)] = 1
    return input_ids, mask, label_ids, torch.tensor(weights, dtype=torch.float32)


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over response tokens of weight × token cross-entropy (next-token shifted)."""
    logits = logits[:, :-1].float()
    labels = labels[:, 1:]
    token_loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                                 ignore_index=IGNORE, reduction="none").view(labels.shape)
    counted = (labels != IGNORE).float()
    return (token_loss * counted * weights[:, None]).sum() / counted.sum().clamp(min=1.0)


class SFT:
    """The learner's SFT objective: draws single steps, trains on their canonical (or sampled)
    action tokens with each step's weight (the replay's importance weight)."""

    sampling = "steps"

    def __init__(self, cfg: SFTConfig, tokenizer, *, max_len: int):
        self.tokenizer, self.target, self.max_len = tokenizer, cfg.target, max_len

    def wrap(self, model):
        return model

    def loss(self, engine, items: list[TrainItem]):
        """→ (loss, metrics, new priorities per item or None, tokens in the batch)."""
        device = next(engine.parameters()).device
        input_ids, mask, labels, weights = (t.to(device) for t in collate(
            items, self.tokenizer, target=self.target, max_len=self.max_len))
        logits = engine(input_ids=input_ids, attention_mask=mask).logits
        loss = sft_loss(logits, labels, weights)
        return loss, {"loss": loss.detach()}, None, int(mask.sum())
