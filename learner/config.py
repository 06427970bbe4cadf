"""The learner's typed configs: LearnerConfig (with LoraConfig), CheckpointConfig, and one class
per objective (SFTConfig, PPOConfig, GRPOConfig). Every default lives here once; launch/config.py
registers these as Hydra structured configs (configs/learner/*.yaml only hold presets).

Imports nothing heavy (no torch), so launch can validate a config before anything starts.
NOT guaranteed: ranges are checked where a wrong value would silently train something else
(`__post_init__`); combinations across rooms are checked by launch/checks.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEDULES = ("constant_with_warmup", "cosine")
LENGTH_NORMS = ("token", "sequence", "dr_grpo")
SFT_TARGETS = ("text", "sampled")


@dataclass
class LoraConfig:
    """peft LoRA: only the adapter trains and, after the first sync, travels."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class LearnerConfig:
    backend: str = "gloo"  # the learner's process group: gloo on CPU, nccl on GPUs
    world_size: int = 1  # learner ranks (Ray actors in one DeepSpeed data-parallel group)
    threads: int = 1  # torch threads per rank
    deepspeed_config: str = "configs/deepspeed/cpu.json"
    zero_stage: int = 1
    batch_size: int = 32  # steps per rank and micro-batch (drawing groups: batch_size // group_size groups)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3.0e-3
    schedule: str = "constant_with_warmup"  # or cosine (decays to min_lr_ratio × lr at total_steps)
    warmup_steps: int = 10
    total_steps: int | None = None
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    max_len: int = 1024  # tokens of prompt + response per sequence
    sync_every: int = 10  # learner steps between weight broadcasts
    min_replay_steps: int = 32  # wait until the replay holds this many steps
    samples_per_insert: float = 16.0  # sampled steps <= this × stored steps
    peak_tflops: float | None = None  # a GPU rank's peak (e.g. 989 for H100 bf16 dense): reports mfu
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self) -> None:
        if self.backend not in ("gloo", "nccl"):
            raise ValueError(f"learner.backend must be gloo or nccl, got {self.backend!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"learner.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.world_size < 1 or self.batch_size < 1 or self.grad_accum < 1 or self.sync_every < 1:
            raise ValueError("learner.world_size, batch_size, grad_accum and sync_every must be >= 1")


@dataclass
class CheckpointConfig:
    """The learner's checkpoints (DeepSpeed state, HF model, learner state, each shard's replay)."""

    every: int = 500  # learner steps between checkpoints (and one at the end); 0: only at the end
    keep: int = 3
    replay: bool = True  # each shard's replay goes into the checkpoint, and a resumed run starts from it


@dataclass
class AlgorithmConfig:
    name: str = "sft"


@dataclass
class SFTConfig(AlgorithmConfig):
    name: str = "sft"
    target: str = "text"  # text: the action's canonical tokens; sampled: the decoder's token path

    def __post_init__(self) -> None:
        if self.target not in SFT_TARGETS:
            raise ValueError(f"algorithm.target must be one of {SFT_TARGETS}, got {self.target!r}")


@dataclass
class PPOConfig(AlgorithmConfig):
    name: str = "ppo"
    clip_eps: float = 0.2  # ratio clip against the behaviour logprobs
    value_coef: float = 0.5
    value_clip: float | None = None  # e.g. 0.2: clip each value's change from its value at sampling time
    entropy_coef: float = 0.0  # bonus on the policy's (masked) entropy
    kl_coef: float = 0.0  # > 0: k3 KL to a frozen copy of the starting model
    gamma: float = 1.0  # discount across turns
    lam: float = 0.95  # GAE lambda across turns
    norm_adv: bool = True  # whiten advantages over the batch's turns


@dataclass
class GRPOConfig(AlgorithmConfig):
    name: str = "grpo"
    clip_eps: float = 0.2  # token-level ratio clip against the behaviour logprobs
    kl_coef: float = 0.0  # > 0: k3 KL to a frozen copy of the starting model
    entropy_coef: float = 0.0
    length_norm: str = "token"  # token | sequence | dr_grpo (sum / max_response_len, no std division)
    max_response_len: int | None = None  # dr_grpo's constant denominator (launch sets rollout.max_tokens)
    std_eps: float = 1.0e-6  # advantage = (R - mean) / (std + std_eps) within a group

    def __post_init__(self) -> None:
        if self.length_norm not in LENGTH_NORMS:
            raise ValueError(f"algorithm.length_norm must be one of {LENGTH_NORMS}, got {self.length_norm!r}")


ALGORITHMS: dict[str, type[AlgorithmConfig]] = {"sft": SFTConfig, "ppo": PPOConfig, "grpo": GRPOConfig}
