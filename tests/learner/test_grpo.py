"""GRPO: group-normalized advantages and the three length normalizations, against numbers worked
out by hand."""

import math

import pytest
import torch

from learner.objectives.grpo import group_advantages, grpo_loss, step_advantages
from learner.objectives.items import TrainItem


def test_group_advantages_by_hand():
    returns = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.5])
    groups = ["g1", "g1", "g1", "g2", "g2", "g3"]
    adv = group_advantages(returns, groups, eps=1e-6)
    # g1 = (1, 0, 0): mean 1/3, std (n-1) = sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3).
    # g2 = (1, 1): all equal, 0 / (0 + eps) = 0.   g3: a group of one gets 0.
    std = math.sqrt(1 / 3)
    expected = [(2 / 3) / (std + 1e-6), (-1 / 3) / (std + 1e-6), (-1 / 3) / (std + 1e-6), 0.0, 0.0, 0.0]
    assert adv.tolist() == pytest.approx(expected, abs=1e-6)
    assert adv[:3].tolist() == pytest.approx([1.1547, -0.57735, -0.57735], abs=1e-4)

    no_std = group_advantages(returns, groups, std_norm=False)  # Dr. GRPO: centered only
    assert no_std.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0], abs=1e-6)


def test_step_advantages_count_each_episode_once():
    # Episode "a" (return 1) has two sampled steps; it must not weigh twice in its group.
    items = [TrainItem(traj_id="a", group_id="g", ret=1.0), TrainItem(traj_id="a", group_id="g", ret=1.0),
             TrainItem(traj_id="b", group_id="g", ret=-0.5), TrainItem(traj_id="c", group_id="h", ret=1.0)]
    # Group g = (1, -0.5): mean 0.25, std (n-1) = sqrt(2 * 0.75^2) = 1.06066.
    adv = step_advantages(items, length_norm="token")
    a = 0.75 / (math.sqrt(2 * 0.75 ** 2) + 1e-6)
    assert adv.tolist() == pytest.approx([a, a, -a, 0.0], abs=1e-6)
    assert step_advantages(items, length_norm="dr_grpo").tolist() == pytest.approx([0.75, 0.75, -0.75, 0.0])


# Response 1 has 3 tokens, response 2 has 1 (padded to 3).
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
ADV = torch.tensor([1.0, -0.5])
OLD = torch.full((2, 3), -1.0)


def test_length_norms_by_hand_at_ratio_one():
    # Ratio 1 everywhere, so each token's loss is -A: -1, -1, -1 and +0.5.
    def loss(norm):
        return float(grpo_loss(OLD.clone(), OLD, MASK, ADV, length_norm=norm, max_len=4)[0])

    assert loss("token") == pytest.approx((-1 - 1 - 1 + 0.5) / 4)            # -0.625
    assert loss("sequence") == pytest.approx((-3 / 3 + 0.5 / 1) / 2)        # -0.25
    assert loss("dr_grpo") == pytest.approx((-3 / 4 + 0.5 / 4) / 2)         # -0.3125
    with pytest.raises(ValueError):
        grpo_loss(OLD, OLD, MASK, ADV, length_norm="dr_grpo")
    with pytest.raises(ValueError):
        grpo_loss(OLD, OLD, MASK, ADV, length_norm="tokens")


RATIOS = torch.tensor([[1.5, 1.0, 0.7], [1.3, 5.0, 5.0]])  # 5.0 on padding must not count


def test_clipped_ratio_and_clip_fraction_by_hand():
    new = OLD + RATIOS.log()
    loss, s = grpo_loss(new, OLD, MASK, ADV, clip_eps=0.2, length_norm="token")
    # A=1,    r=1.5: max(-1.5, -1.2) = -1.2   clipped branch
    # A=1,    r=1.0: -1.0
    # A=1,    r=0.7: max(-0.7, -0.8) = -0.7   (A > 0: a low ratio is not clipped)
    # A=-0.5, r=1.3: max(0.65, 0.6)  = 0.65   (A < 0: a high ratio is not clipped)
    assert float(loss) == pytest.approx((-1.2 - 1.0 - 0.7 + 0.65) / 4, abs=1e-6)
    assert float(s["clip_fraction"]) == pytest.approx(1 / 4)
    assert float(s["ratio_mean"]) == pytest.approx((1.5 + 1.0 + 0.7 + 1.3) / 4, abs=1e-6)
    assert float(s["ratio_min"]) == pytest.approx(0.7) and float(s["ratio_max"]) == pytest.approx(1.5)


def test_gradients_per_token_under_each_norm():
    # d loss / d logprob of an unclipped token is -A r times its weight under the norm;
    # the clipped token (first) gets 0.
    for norm, weights in [("token", [1 / 4] * 3 + [1 / 4]),
                          ("sequence", [1 / 6] * 3 + [1 / 2]),
                          ("dr_grpo", [1 / 8] * 3 + [1 / 8])]:
        new = (OLD + RATIOS.log()).requires_grad_(True)
        grpo_loss(new, OLD, MASK, ADV, clip_eps=0.2, length_norm=norm, max_len=4)[0].backward()
        g = new.grad
        assert float(g[0, 0]) == 0.0
        assert float(g[0, 1]) == pytest.approx(-1.0 * 1.0 * weights[1], abs=1e-6)
        assert float(g[0, 2]) == pytest.approx(-1.0 * 0.7 * weights[2], abs=1e-6)
        assert float(g[1, 0]) == pytest.approx(0.5 * 1.3 * weights[3], abs=1e-6)
        assert g[1, 1:].tolist() == [0.0, 0.0]


def test_kl_and_entropy_terms_by_hand():
    d = torch.tensor([[0.0, math.log(2), -math.log(2)], [math.log(2), 0.0, 0.0]])  # ref - logprob
    k3 = [0.0, 1 - math.log(2), math.log(2) - 0.5, 1 - math.log(2)]  # e^d - d - 1
    entropy = torch.tensor([[1.0, 1.0, 1.0], [3.0, 0.0, 0.0]])
    loss, s = grpo_loss(OLD.clone(), OLD, MASK, ADV, length_norm="sequence", kl_coef=0.1, ref_logprobs=OLD + d,
                        entropy_coef=0.01, entropy=entropy)
    # sequence: ((-1 + 0.1 k3_0) + (-1 + 0.1 k3_1) + (-1 + 0.1 k3_2)) / 3 and (0.5 + 0.1 k3_3) / 1, then mean.
    seq1 = sum(-1 + 0.1 * k for k in k3[:3]) / 3
    seq2 = 0.5 + 0.1 * k3[3]
    ent = (1 + 1 + 1 + 3) / 4
    assert float(s["kl"]) == pytest.approx(sum(k3) / 4, abs=1e-6)
    assert float(s["policy_loss"]) == pytest.approx(-0.25)
    assert float(loss) == pytest.approx((seq1 + seq2) / 2 - 0.01 * ent, abs=1e-6)
