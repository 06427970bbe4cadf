"""SFT-on-success loss and collation, checked against numbers computed by hand."""

import math

import numpy as np
import torch

from learner.objectives.items import TrainItem
from learner.objectives.sft import IGNORE, collate, sft_loss


def test_loss_by_hand():
    # Two sequences of 3 tokens over a vocab of 2. Position t predicts token t+1.
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 0.0]],
                           [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[IGNORE, 1, 0],      # targets: pos0 -> 1, pos1 -> 0
                           [IGNORE, 0, IGNORE]])  # target: pos0 -> 0
    weights = torch.tensor([1.0, 0.5])
    ln2 = math.log(2)
    ce_a0 = ln2                                  # uniform
    ce_a1 = math.log(1 + math.exp(-2.0))         # logits (2, 0), target 0
    ce_b0 = math.log(1 + math.exp(1.0))          # logits (0, 1), target 0
    expected = (ce_a0 + ce_a1 + 0.5 * ce_b0) / 3
    assert abs(float(sft_loss(logits, labels, weights)) - expected) < 1e-6


class CharTokenizer:
    eos_token_id, pad_token_id = 1, 0

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]


def test_collate_text_target_masks_prompt_and_pads():
    items = [
        TrainItem(prompt_ids=np.array([5, 6, 7], dtype=np.int32), response_ids=np.array([9], dtype=np.int32),
         action="ab", weight=1.0),
        TrainItem(prompt_ids=np.array([5], dtype=np.int32), response_ids=np.array([9, 9], dtype=np.int32),
         action="c", weight=0.25),
    ]
    ids, mask, labels, w = collate(items, CharTokenizer(), target="text")
    assert ids.tolist() == [[5, 6, 7, 97, 98, 1], [5, 99, 1, 0, 0, 0]]
    assert mask.tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    assert labels.tolist() == [[IGNORE] * 3 + [97, 98, 1], [IGNORE, 99, 1, IGNORE, IGNORE, IGNORE]]
    assert w.tolist() == [1.0, 0.25]


def test_collate_sampled_target_uses_decoder_tokens():
    items = [TrainItem(prompt_ids=np.array([5], dtype=np.int32), response_ids=np.array([9, 8], dtype=np.int32),
              action="zz")]
    ids, _, labels, _ = collate(items, CharTokenizer(), target="sampled")
    assert ids.tolist() == [[5, 9, 8]]
    assert labels.tolist() == [[IGNORE, 9, 8]]
