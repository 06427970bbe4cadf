"""The learner's side of vLLM's weight-transfer engine (GPU engines): group ranks per engine,
the weight source it hands vLLM, and (marked gpu) a full sync from the learner into two real AsyncLLM engines
hosted by Ray actors, checked against the HF model's logprobs."""

import pytest
import torch

from weights.vllm_transfer import RolloutActorsClient, rank_offsets

PROMPT = 'Task: Click on the "okay" button.\nElements:\nbutton "okay"\nbutton "Cancel"'


def test_each_engine_gets_its_own_group_ranks_after_the_learner():
    assert rank_offsets([1]) == [1]
    assert rank_offsets([1, 1, 1]) == [1, 2, 3]
    assert rank_offsets([2, 4, 1]) == [1, 3, 7]  # tensor-parallel engines take one rank per worker


def test_client_needs_one_rank_count_per_actor():
    with pytest.raises(ValueError, match="2 actors but 1 engine rank counts"):
        RolloutActorsClient([object(), object()], [1], timeout_s=1)


def test_weight_source_declares_what_it_yields_and_reads_the_tensors_afresh():
    from weights.vllm_transfer import _weight_source

    state = {"a.weight": torch.zeros(3, 2), "b.bias": torch.ones(4, dtype=torch.bfloat16)}
    source = _weight_source(lambda: dict(state))
    meta = source.metadata()
    assert [(m.name, m.dtype, m.shape) for m in meta] == [("a.weight", torch.float32, (3, 2)),
                                                          ("b.bias", torch.bfloat16, (4,))]
    assert [n for n, _ in source] == [m.name for m in meta]
    state["a.weight"] = torch.full((3, 2), 7.0)  # the next pass sends what the learner holds now
    assert torch.equal(dict(source)["a.weight"], state["a.weight"])


# ---- GPU: learner (this process, cuda:0) -> two engines (Ray actors, one GPU each) -------------


class EngineHost:
    """A Ray actor holding one GPU engine, with the rollout actor's four transfer_* calls."""

    def __init__(self, model_path: str):
        from actors.engine import make_engine
        from actors.engine.config import VLLMGPUConfig

        self.engine = make_engine(VLLMGPUConfig(dtype="float32", max_model_len=1024, enforce_eager=True,
                                                gpu_memory_utilization=0.3), model_path)

    def transfer_init(self, init_info: dict) -> None:
        self.engine.init_weight_transfer(init_info)

    def transfer_start(self) -> None:
        self.engine.start_weight_update()

    def transfer_update(self, update_info: dict) -> None:
        self.engine.update_weights(update_info)

    def transfer_finish(self, version: int) -> int:
        self.engine.finish_weight_update(version)
        return version

    def logprobs(self, prompt_text: str) -> tuple[list[int], list[int], list[float]]:
        prompt = self.engine.chat_prompt_ids(prompt_text)
        gen = self.engine.generate([prompt], [None], temperature=1.0, max_tokens=8)[0]
        return prompt, gen.token_ids, gen.logprobs

    def version(self) -> int:
        return self.engine.policy_version

    def close(self) -> None:
        self.engine.close()


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 3, reason="needs 3 GPUs (the learner and two engines)")
def test_sync_reaches_two_gpu_engines_over_the_weight_transfer_engine(tmp_path):
    import ray
    from transformers import AutoModelForCausalLM

    from learner.tiny_model import TinyModelSpec, build_tiny_model
    from weights.vllm_transfer import VLLMTransferSender

    model_path = str(build_tiny_model(TinyModelSpec(), tmp_path / "model"))
    # The learner (this process) on the last GPU; Ray hands the others (ids 0..n-2) to the
    # engines, so no two NCCL ranks share a device.
    learner_gpu = torch.cuda.device_count() - 1
    torch.cuda.set_device(learner_gpu)
    ray.init(num_gpus=learner_gpu, include_dashboard=False, log_to_driver=False)
    try:
        hosts = [ray.remote(EngineHost).options(num_gpus=1, max_concurrency=4).remote(model_path) for _ in range(2)]
        ray.get([h.version.remote() for h in hosts])
        torch.manual_seed(1)
        policy = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(f"cuda:{learner_gpu}")
        with torch.no_grad():
            for p in policy.parameters():  # far from the file the engines loaded
                p.add_(torch.randn_like(p) * 0.5)
        named = {n: p.data for n, p in policy.named_parameters()}
        sync = VLLMTransferSender(lambda: named, hosts, [1, 1], "127.0.0.1", timeout_s=300)
        assert sync.sync(version=1) == sum(p.numel() * 4 for p in policy.parameters())
        assert ray.get([h.version.remote() for h in hosts]) == [1, 1]
        cpu_policy = policy.cpu()
        for prompt, ids, lps in ray.get([h.logprobs.remote(PROMPT) for h in hosts]):
            x = torch.tensor([prompt + ids])
            with torch.no_grad():
                lp = torch.log_softmax(cpu_policy(x).logits[0].float(), -1)
            want = [float(lp[len(prompt) - 1 + i, t]) for i, t in enumerate(ids)]
            assert lps == pytest.approx(want, abs=1e-3)
        sync.close()
        ray.get([h.close.remote() for h in hosts])
    finally:
        ray.shutdown()
