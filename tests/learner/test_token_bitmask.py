"""The packed allowed-token bitmask: xgrammar's word layout on the host, the bool mask it
expands to on the logits' device."""

import numpy as np
import pytest
import torch

from learner.scoring.token_bitmask import bool_mask, clear_tail, is_allowed, n_words, pack_ids, unpack_ids


def _xgrammar_bit(words, i):
    """xgrammar's layout, spelled out: bit i % 32 of word i // 32."""
    return (int(words[i // 32]) >> (i % 32)) & 1


def test_pack_follows_xgrammars_layout_and_unpacks_back():
    ids = [0, 5, 31, 32, 63, 64, 99]  # bit 31 set: a negative int32 word
    row = pack_ids(ids, n_words(100))
    assert row.dtype == np.int32 and row.shape == (4,)
    assert row.tolist() == [1 + 2 ** 5 - 2 ** 31, 1 - 2 ** 31, 1, 2 ** 3]
    assert [i for i in range(128) if _xgrammar_bit(row, i)] == ids
    assert unpack_ids(row) == ids
    assert [i for i in range(-2, 130) if is_allowed(row, i)] == ids


def test_clear_tail_keeps_only_ids_below_the_vocabulary():
    rows = np.full((2, n_words(70)), -1, np.int32)  # as xgrammar allocates: all ones
    assert unpack_ids(clear_tail(rows, 70)[1]) == list(range(70))
    assert unpack_ids(clear_tail(np.full((1, 2), -1, np.int32), 64)[0]) == list(range(64))


def test_bool_mask_pads_slices_and_refuses_ids_without_a_logit():
    bits = torch.from_numpy(np.stack([pack_ids([1, 40], 2), pack_ids([63], 2)]))
    for vocab_size in (64, 100):  # ids past the rows' 64: never allowed
        mask = bool_mask(bits, vocab_size)
        assert mask.shape == (2, vocab_size) and mask.dtype == torch.bool
        assert mask.nonzero().tolist() == [[0, 1], [0, 40], [1, 63]]
    assert bool_mask(bits[:1], 41).nonzero().tolist() == [[0, 1], [0, 40]]
    with pytest.raises(ValueError, match="past the logits' vocabulary of 40"):
        bool_mask(bits[:1], 40)
