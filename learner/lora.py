"""LoRA through peft: the policy wrapped from config `learner.lora` (learner/config.py LoraConfig).

The wrap happens before DeepSpeed initialization, so the optimizer only ever sees the adapter
parameters (the base is frozen). What the actors need of it (the base
and adapter tensors, the adapter's config) is in weights/peft_tensors.py.
"""

from __future__ import annotations

import torch

from learner.config import LoraConfig


def wrap_lora(model: torch.nn.Module, settings: LoraConfig) -> torch.nn.Module:
    """The peft model around `model`; only the adapter parameters require grad."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    config = PeftLoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                            target_modules=list(settings.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def is_peft(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)
