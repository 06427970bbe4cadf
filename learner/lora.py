"""LoRA through peft: the policy wrapped from config `learner.lora`, and its two sets of tensors.

The wrap happens before DeepSpeed initialization, so the optimizer only ever sees the adapter
parameters (the base is frozen). What the actors need comes in two sets, each as a dict:
- `base_tensors`: the frozen base model under its HF names (what the engine loaded at start);
- `adapter_tensors`: the adapter in PEFT's saved naming (`adapter_model.safetensors` keys,
  e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`), which vLLM loads as a
  LoRA adapter.
"""

from __future__ import annotations

import json

import torch

DEFAULTS = {"r": 16, "alpha": 32, "dropout": 0.1,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
PEFT_PREFIX = "base_model.model."


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


def adapter_tensors(model) -> dict[str, torch.Tensor]:
    """The adapter as peft saves it (adapter name dropped from the keys)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach() for k, v in get_peft_model_state_dict(model).items()}


def base_tensors(model) -> dict[str, torch.Tensor]:
    """The frozen base under HF names: peft's prefix and `.base_layer` dropped, adapters left out."""
    adapter_name = model.active_adapter
    out = {}
    for name, p in model.named_parameters():
        if f".{adapter_name}." in name and ".lora_" in name:
            continue
        out[name.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")] = p.data
    return out


def adapter_config(model) -> dict:
    """adapter_config.json's content, as peft's save_pretrained writes it (JSON-safe)."""
    cfg = model.peft_config[model.active_adapter].to_dict()
    return json.loads(json.dumps(cfg, default=lambda o: sorted(o) if isinstance(o, set) else str(o)))
