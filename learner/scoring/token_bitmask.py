"""Allowed token sets as packed bitmasks, in xgrammar's layout (xgr.allocate_token_bitmask,
GrammarMatcher.fill_next_token_bitmask): int32 words, ceil(V/32) per position, bit j of word w
set iff token 32*w + j is allowed. One position costs V/8 bytes however many tokens it allows.

Host side (numpy): build a row from ids, test one id, list a row's ids. Device side (torch):
expand the words to a bool mask over the logits' vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

_BYTE_BITS = (1 << np.arange(8)).astype(np.uint8)


def n_words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def pack_ids(ids: Iterable[int], words: int) -> np.ndarray:
    """One bitmask row [words] int32 with the bits of `ids` set."""
    bits = np.zeros(words * 32, np.uint8)
    bits[np.fromiter(ids, np.int64)] = 1
    return np.packbits(bits, bitorder="little").view("<i4")


def clear_tail(rows: np.ndarray, vocab_size: int) -> np.ndarray:
    """Clear the bits at ids vocab_size and past in the last word of each row, in place:
    xgrammar leaves them as allocate_token_bitmask set them (all ones)."""
    if vocab_size % 32:
        rows[..., -1] &= np.int32((1 << vocab_size % 32) - 1)
    return rows


def is_allowed(row: np.ndarray, token: int) -> bool:
    return 0 <= token < 32 * len(row) and bool((int(row[token >> 5]) >> (token & 31)) & 1)


def unpack_ids(row: np.ndarray) -> list[int]:
    """The allowed ids of one bitmask row, ascending."""
    return np.flatnonzero(np.unpackbits(row.astype("<i4").view(np.uint8), bitorder="little")).tolist()


def bool_mask(bits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Bitmask words [..., W] int32 → bool [..., vocab_size] on bits' device. Ids past 32*W are
    not allowed; an allowed id at or past vocab_size raises (it has no logit)."""
    missing = n_words(vocab_size) - bits.size(-1)
    if missing > 0:
        bits = torch.nn.functional.pad(bits, (0, missing))
    # Read as little-endian bytes (x86, ARM, CUDA): byte k of a row holds ids 8k..8k+7, its bit i
    # id 8k+i. One uint8 temporary per id, then the mask.
    byte_bits = torch.from_numpy(_BYTE_BITS).to(bits.device)
    mask = (bits.contiguous().view(torch.uint8)[..., None] & byte_bits).ne(0).flatten(-2)
    if mask.size(-1) > vocab_size and bool(mask[..., vocab_size:].any()):
        raise ValueError(f"an allowed token id is past the logits' vocabulary of {vocab_size}")
    return mask[..., :vocab_size]
