"""The two sets of tensors a peft LoRA policy sends to its engines, each as a dict:
- `base_tensors`: the frozen base model under its HF names (what the engine loaded at start);
- `adapter_tensors`: the adapter in PEFT's saved naming (`adapter_model.safetensors` keys,
  e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`), which vLLM loads as a
  LoRA adapter;
and `adapter_config`, adapter_config.json's content. peft itself is imported lazily.
"""

from __future__ import annotations

import json

import torch

PEFT_PREFIX = "base_model.model."


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
