"""The allowed token sets of a response decoded under a grammar constraint (step constraint
"grammar", the trajectory's `grammar` EBNF), computed by xgrammar exactly as vLLM's xgrammar
backend computes them (vllm/v1/structured_output/backend_xgrammar.py):

- TokenizerInfo.from_huggingface(tokenizer, vocab_size=...): vLLM passes the model config's
  vocab size; ids past the tokenizer's own vocabulary have no spelling and xgrammar never allows
  them, so len(tokenizer) (the default here) gives the same allowed sets.
- GrammarCompiler.compile_grammar(ebnf), one GrammarMatcher per request with
  override_stop_tokens = the request's stop ids (SamplingParams.all_stop_token_ids: the eos of
  the tokenizer / generation_config plus any stop_token_ids; pass the extras as `stop_ids`, as
  for the choice path), no rollback.
- Before each token: fill_next_token_bitmask; after it: accept_token.

Compiled grammars are cached by their text (the actor sends the same EBNF in every trajectory).

NOT guaranteed: Lark grammars (vLLM compiles text it takes for Lark with compile_lark; the actor
only sends EBNF); mistral / plamo3 tokenizers (vLLM builds their TokenizerInfo differently).
Cost: the allowed sets are xgrammar's own bitmask rows (learner/scoring/token_bitmask.py), V/8 bytes per
position on the host however much of the vocabulary a free-text position allows; the learner
expands them to a bool [B, R, V] mask on the logits' device.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import numpy as np

from learner.scoring.token_bitmask import clear_tail, is_allowed

_MAX_CACHED = 16


class GrammarMasks:
    """xgrammar's TokenizerInfo and compiler for one tokenizer, and the compiled grammars by text."""

    def __init__(self, tokenizer, vocab_size: int | None = None):
        import xgrammar as xgr

        self._xgr = xgr
        self.vocab_size = vocab_size or len(tokenizer)
        self.eos_id = tokenizer.eos_token_id
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=self.vocab_size)
        self.compiler = xgr.GrammarCompiler(self.info, cache_enabled=False)
        self._compiled: OrderedDict[str, object] = OrderedDict()

    def compiled(self, ebnf: str):
        if ebnf in self._compiled:
            self._compiled.move_to_end(ebnf)
        else:
            self._compiled[ebnf] = self.compiler.compile_grammar(ebnf)
            if len(self._compiled) > _MAX_CACHED:
                self._compiled.popitem(last=False)
        return self._compiled[ebnf]

    def allowed_per_position(self, response_ids: Sequence[int], ebnf: str,
                             stop_ids: Iterable[int] | None = None) -> np.ndarray:
        """The allowed set before each response token, as bitmask rows [len(response_ids),
        ceil(vocab_size/32)] int32; raises ValueError if the sampled path leaves the grammar.
        `stop_ids`: stop tokens besides the tokenizer's eos."""
        xgr = self._xgr
        stops = sorted({self.eos_id, *(stop_ids or ())})
        matcher = xgr.GrammarMatcher(self.compiled(ebnf), override_stop_tokens=stops)
        bitmask = xgr.allocate_token_bitmask(len(response_ids), self.vocab_size)
        rows = bitmask.numpy()  # the same memory
        for pos, t in enumerate(int(t) for t in response_ids):
            if matcher.is_terminated():
                raise ValueError(f"response token {t} at position {pos} comes after the grammar's "
                                 "stop token: it is outside the grammar constraint")
            matcher.fill_next_token_bitmask(bitmask, pos)
            if not is_allowed(rows[pos], t) or not matcher.accept_token(t):
                done = self.info.decoded_vocab
                raise ValueError(f"response token {t} at position {pos} is outside the grammar constraint "
                                 f"(text so far {b''.join(done[int(x)] for x in response_ids[:pos])!r})")
        return clear_tail(rows, self.vocab_size)


_MASKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def grammar_masks(tokenizer) -> GrammarMasks:
    """The GrammarMasks of `tokenizer`, built on first use."""
    if tokenizer not in _MASKS:
        _MASKS[tokenizer] = GrammarMasks(tokenizer)
    return _MASKS[tokenizer]
