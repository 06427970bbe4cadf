"""LoRA through peft: the policy wrapped from config `learner.lora`, and its two sets of tensors.

The wrap happens before DeepSpeed initialization, so the optimizer only ever sees the adapter
parameters (the base is frozen). What the actors need of it (the base
and adapter tensors, the adapter's config) is in weights/peft_tensors.py.
"""

from __future__ import annotations

import torch

DEFAULTS = {"r": 16, "alpha": 32, "dropout": 0.1,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def lora_settings(cfg: dict | None) -> dict | None:
    """`learner.lora` with its defaults filled in, or None when LoRA is off."""
    if not cfg or not cfg.get("enabled"):
        return None
    out = {k: cfg.get(k) if cfg.get(k) is not None else v for k, v in DEFAULTS.items()}
    out["target_modules"] = list(out["target_modules"])
    return out


def wrap_lora(model: torch.nn.Module, settings: dict) -> torch.nn.Module:
    """The peft model around `model`; only the adapter parameters require grad."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=int(settings["r"]), lora_alpha=int(settings["alpha"]),
                        lora_dropout=float(settings["dropout"]),
                        target_modules=list(settings["target_modules"]), bias="none",
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def is_peft(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)
