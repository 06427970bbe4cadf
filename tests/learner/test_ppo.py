"""PPO: the loss and its parts, GAE over turns and the value head, against numbers worked out by
hand."""

import math

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from learner.objectives.items import TrainItem
from learner.objectives.ppo import ValueHeadModel, gae, k3_kl, pack_episodes, ppo_loss, turn_advantages, whiten

# Two turns: the first wrote 2 tokens, the second 1 (its second slot is padding).
MASK = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
OLD = torch.tensor([[-1.0, -1.0], [-2.0, -3.0]])
RATIOS = torch.tensor([[1.5, 0.9], [0.5, 7.0]])  # 7.0 sits on padding and must not count
NEW = OLD + RATIOS.log()
ADV = torch.tensor([1.0, -2.0])


def test_policy_loss_and_clip_fraction_by_hand():
    loss, s = ppo_loss(NEW, OLD, MASK, ADV, values=torch.zeros(2), returns=torch.zeros(2), clip_eps=0.2)
    # Token (A=1, r=1.5):  max(-1.5, -1.2) = -1.2  clipped branch
    # Token (A=1, r=0.9):  max(-0.9, -0.9) = -0.9  (inside the clip range)
    # Token (A=-2, r=0.5): max(1.0, 1.6)   = 1.6   clipped branch
    assert float(s["policy_loss"]) == pytest.approx((-1.2 - 0.9 + 1.6) / 3, abs=1e-6)
    assert float(loss) == pytest.approx((-1.2 - 0.9 + 1.6) / 3, abs=1e-6)
    assert float(s["clip_fraction"]) == pytest.approx(2 / 3)
    assert float(s["ratio_mean"]) == pytest.approx((1.5 + 0.9 + 0.5) / 3, abs=1e-6)
    assert float(s["ratio_min"]) == pytest.approx(0.5) and float(s["ratio_max"]) == pytest.approx(1.5)
    approx_kl = ((0.5 - math.log(1.5)) + (-0.1 - math.log(0.9)) + (-0.5 - math.log(0.5))) / 3
    assert float(s["approx_kl"]) == pytest.approx(approx_kl, abs=1e-6)


def test_gradient_is_zero_on_clipped_tokens():
    new = NEW.clone().requires_grad_(True)
    loss, _ = ppo_loss(new, OLD, MASK, ADV, values=torch.zeros(2), returns=torch.zeros(2), clip_eps=0.2)
    loss.backward()
    # d/dlogp of -A r / 3 is -A r / 3 where unclipped; 0 where the clip is active or padded.
    assert new.grad.tolist() == [[0.0, pytest.approx(-0.9 / 3)], [0.0, 0.0]]


def test_full_loss_with_value_entropy_and_kl_by_hand():
    values, returns = torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.0])
    entropy = torch.tensor([[1.0, 2.0], [0.5, 9.0]])
    d = torch.tensor([[0.0, math.log(2)], [-math.log(2), 0.0]])  # ref_logprob - logprob per token
    loss, s = ppo_loss(NEW, OLD, MASK, ADV, values, returns, clip_eps=0.2, value_coef=0.5,
                       entropy_coef=0.01, entropy=entropy, kl_coef=0.1, ref_logprobs=NEW + d)
    policy = -0.5 / 3
    value = 0.5 * ((0.5 - 1.0) ** 2 + (-1.0 - 0.0) ** 2) / 2            # 0.3125
    ent = (1.0 + 2.0 + 0.5) / 3
    kl = (0.0 + (2 - math.log(2) - 1) + (0.5 + math.log(2) - 1)) / 3     # k3 = e^d - d - 1; = 1/6
    assert float(s["value_loss"]) == pytest.approx(0.3125)
    assert float(s["entropy"]) == pytest.approx(ent)
    assert float(s["kl"]) == pytest.approx(1 / 6, abs=1e-6) == kl
    assert float(loss) == pytest.approx(policy + 0.5 * value - 0.01 * ent + 0.1 * kl, abs=1e-6)


def test_value_clipping_by_hand():
    values, returns, old_values = torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.0]), torch.zeros(2)
    _, s = ppo_loss(NEW, OLD, MASK, ADV, values, returns, old_values=old_values, value_clip=0.2)
    # Turn 1: clipped value 0.2, max((0.5-1)^2, (0.2-1)^2) = 0.64.
    # Turn 2: clipped value -0.2, max((-1-0)^2, (-0.2-0)^2) = 1.0.
    assert float(s["value_loss"]) == pytest.approx(0.5 * (0.64 + 1.0) / 2)


def test_k3_is_zero_at_equal_policies_and_positive_otherwise():
    lp = torch.tensor([-1.0, -2.0])
    assert k3_kl(lp, lp).tolist() == [0.0, 0.0]
    assert (k3_kl(lp, lp + torch.tensor([0.3, -0.3])) > 0).all()


def test_gae_by_hand_on_a_three_turn_episode():
    # Episode 1: 3 turns, reward only at the end. Episode 2: 2 turns, padded to 3.
    rewards = torch.tensor([[0.0, 0.0, 1.0], [1.0, -1.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.2, 0.1, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # Episode 1, gamma*lam = 0.72:
    #   t=2: delta = 1 - 0.7 = 0.3;              A = 0.3
    #   t=1: delta = 0.9*0.7 - 0.6 = 0.03;       A = 0.03 + 0.72*0.3 = 0.246
    #   t=0: delta = 0.9*0.6 - 0.5 = 0.04;       A = 0.04 + 0.72*0.246 = 0.21712
    # Episode 2 (its last turn is terminal: no bootstrap from the padding):
    #   t=1: delta = -1 - 0.1 = -1.1;            A = -1.1
    #   t=0: delta = 1 + 0.9*0.1 - 0.2 = 0.89;   A = 0.89 + 0.72*(-1.1) = 0.098
    assert adv[0].tolist() == pytest.approx([0.21712, 0.246, 0.3], abs=1e-6)
    assert adv[1].tolist() == pytest.approx([0.098, -1.1, 0.0], abs=1e-6)
    assert ret[0].tolist() == pytest.approx([0.71712, 0.846, 1.0], abs=1e-6)
    assert ret[1].tolist() == pytest.approx([0.298, -1.0, 0.0], abs=1e-6)


def test_gae_with_gamma_and_lambda_one_is_return_to_go_minus_value():
    adv, ret = gae(torch.tensor([[0.5, 0.0, 2.0]]), torch.tensor([[1.0, 1.0, 1.0]]), torch.ones(1, 3), 1.0, 1.0)
    assert adv.tolist() == [[1.5, 1.0, 1.0]]
    assert ret.tolist() == [[2.5, 2.0, 2.0]]


def test_turn_advantages_map_steps_in_any_order():
    items = [TrainItem(traj_id="b", step_index=1, reward=-1.0), TrainItem(traj_id="a", step_index=2, reward=1.0),
             TrainItem(traj_id="a", step_index=0, reward=0.0), TrainItem(traj_id="b", step_index=0, reward=1.0),
             TrainItem(traj_id="a", step_index=1, reward=0.0)]
    values = torch.tensor([0.1, 0.7, 0.5, 0.2, 0.6])
    adv, ret = turn_advantages(items, values, gamma=0.9, lam=0.8)
    assert adv.tolist() == pytest.approx([-1.1, 0.3, 0.21712, 0.098, 0.246], abs=1e-6)
    assert ret.tolist() == pytest.approx([-1.0, 1.0, 0.71712, 0.298, 0.846], abs=1e-6)

    index, mask = pack_episodes(items)
    assert index.tolist() == [[3, 0, -1], [2, 4, 1]] and mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match="not 0..n-1"):
        pack_episodes([TrainItem(traj_id="a", step_index=0), TrainItem(traj_id="a", step_index=2)])


def test_value_head_on_a_tiny_causal_lm():
    torch.manual_seed(0)
    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=1, num_key_value_heads=1))
    model = ValueHeadModel(lm)
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    logits, values = model(ids, mask)
    assert logits.shape == (2, 4, 16) and values.shape == (2, 4)
    assert values.abs().max() == 0  # zero-initialised head
    with torch.no_grad():
        model.value_head.bias.fill_(0.25)
    _, values = model(ids, mask)
    turn_values = values[torch.arange(2), torch.tensor([2, 1])]  # last prompt token of each turn
    assert turn_values.tolist() == [0.25, 0.25]
    (turn_values - 1.0).pow(2).sum().backward()
    assert model.value_head.weight.grad.abs().sum() > 0 and model.value_head.bias.grad == pytest.approx(-3.0)


def test_whiten():
    assert whiten(torch.tensor([1.0, 2.0, 3.0])).tolist() == pytest.approx([-1.0, 0.0, 1.0])  # std with n-1 = 1
