"""Small policies for the weights tests: a Qwen2 of one layer, and the same under a peft LoRA."""

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def tiny_policy() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=64)
    return Qwen2ForCausalLM(cfg)


def lora_policy() -> torch.nn.Module:
    """q_proj and v_proj adapted (r 4), lora_B random so the adapter is not zero."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_policy(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                     task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    return model
