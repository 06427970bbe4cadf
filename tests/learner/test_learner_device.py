"""Each objective on the model's device: batches are collated on the CPU from replay items and
moved to wherever the model lives, the frozen KL reference follows it there (device and dtype),
and priorities come back as CPU arrays. On CUDA the losses, priorities and gradients equal the
CPU's."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from buffer.core.shard import ReplayShard
from buffer.net.sample_client import decode_group, decode_item
from buffer.wire.schema import encode
from learner.config import GRPOConfig, PPOConfig, SFTConfig
from learner.objectives.items import TrainItem, episode_items, step_items
from learner.objectives.registry import make_objective
from tests.support.trajectories import make_trajectory

pytestmark = pytest.mark.timeout(300)
CONFIGS = {"sft": SFTConfig(), "ppo": PPOConfig(kl_coef=0.1, entropy_coef=0.01), "grpo": GRPOConfig(kl_coef=0.1)}


def decoded_actions(traj, tokenizer):
    """`traj` with each step's response the tokens of its action (+ eos), as a decoder
    constrained to the step's allowed actions would have produced them."""
    for step in traj.steps:
        step.allowed_actions = step.allowed_actions or [step.action]
        step.action = step.allowed_actions[-1]
        step.response_ids = np.array(tokenizer.encode(step.action, add_special_tokens=False)
                                     + [tokenizer.eos_token_id], np.int32)
        step.logprobs = np.full(len(step.response_ids), -0.5, np.float32)
    return traj


def replay_items(tokenizer) -> tuple[list[TrainItem], list[TrainItem]]:
    """(step items, episode items) as the learner gets them: drawn from a shard, decoded."""
    rng = np.random.default_rng(7)
    shard = ReplayShard(capacity=100, config={"group_size": 2})
    for g in range(3):
        for _ in range(2):
            traj = decoded_actions(make_trajectory(rng, group_id=f"g{g}", vocab=tokenizer.vocab_size), tokenizer)
            assert shard.insert(encode(traj))["status"] == "stored"
    steps = step_items([decode_item(it) for it in shard.sample(6, rng)])
    status, groups = shard.sample_groups(2, rng)
    assert status == "ok"
    return steps, episode_items([decode_group(g) for g in groups])


def objective_results(model_path: str, device: str) -> dict[str, tuple]:
    """name → (loss, priorities or None, gradient norm) of one backward on `device`."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    steps, episodes = replay_items(tokenizer)
    out = {}
    for name, cfg in CONFIGS.items():
        objective = make_objective(cfg, tokenizer, max_len=256)
        model = objective.wrap(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)).to(device)
        loss, metrics, priorities, tokens = objective.loss(model, steps if name == "sft" else episodes)
        loss.backward()
        assert all(torch.isfinite(torch.as_tensor(v)).all() for v in metrics.values()), name
        grad = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))
        prio = None if priorities is None else priorities.detach().double().cpu().numpy()
        out[name] = (float(loss.detach()), prio, float(grad), tokens)
    return out


def test_each_objective_trains_on_sampled_replay_items(model_path):
    results = objective_results(model_path, "cpu")
    for name, (loss, prio, grad, tokens) in results.items():
        assert np.isfinite(loss) and grad > 0 and tokens > 0, name
    assert results["sft"][1] is None
    n_turns = len(replay_items(AutoTokenizer.from_pretrained(model_path))[1])
    for name in ("ppo", "grpo"):  # one priority per drawn turn (|advantage|), back on the CPU
        prio = results[name][1]
        assert prio.shape == (n_turns,) and np.isfinite(prio).all() and (prio >= 0).all() and prio.any(), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_each_objective_on_cuda_equals_the_cpu(model_path):
    cpu, cuda = objective_results(model_path, "cpu"), objective_results(model_path, "cuda")
    for name in CONFIGS:
        (l0, p0, g0, t0), (l1, p1, g1, t1) = cpu[name], cuda[name]
        assert l1 == pytest.approx(l0, rel=1e-4, abs=1e-5) and g1 == pytest.approx(g0, rel=1e-3), name
        assert t0 == t1, name
        if p0 is not None:
            np.testing.assert_allclose(p1, p0, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["ppo", "grpo"])
def test_the_kl_reference_follows_the_policy_cast_after_it_was_copied(model_path, name):
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    _, episodes = replay_items(tokenizer)
    objective = make_objective(CONFIGS[name], tokenizer, max_len=256)
    model = objective.wrap(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32))
    assert next(objective.ref.parameters()).dtype == torch.float32
    model.to(torch.bfloat16)  # as DeepSpeed's bf16 does to the policy alone
    loss, metrics, _, _ = objective.loss(model, episodes)
    assert next(objective.ref.parameters()).dtype == torch.bfloat16
    assert torch.isfinite(loss) and torch.isfinite(metrics["kl"])
