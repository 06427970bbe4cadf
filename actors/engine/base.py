"""What every rollout engine is: the `Engine` protocol, its result and error types, and the
decoding constraints it takes. Light on purpose: no vLLM here (actors/engine/sampling.py holds
the vLLM-facing helpers the engines share).

An engine turns prompt token ids (a chat prompt: `chat_prompt_ids(text)`) into generations:
the sampled token ids, the behaviour logprob of each (over the distribution it sampled from:
under a choice or grammar constraint, the masked one) and the text. Two ways to generate on one
engine: streaming (`submit` a request, `step` until it comes back; requests join and leave the
running batch between iterations) and `generate` (a blocking batch). Weights change only while
no request is in flight (`EngineBusy` otherwise), so every generation is produced by exactly
one `policy_version`.

A constraint is a choice list (the text must be one of them), a `Grammar` (EBNF), or None.

NOT guaranteed: thread safety (one thread drives an engine); the order in which `step` returns
finished requests; that every engine takes weights as tensors (`load_weights`: the GPU engine
refuses, it takes them over vLLM's weight-transfer engine, see `WeightTransferEngine`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Grammar:
    """An EBNF grammar constraint, compiled by xgrammar inside vLLM."""

    ebnf: str


Constraint = list[str] | Grammar | None


@dataclass
class Generation:
    token_ids: list[int]
    logprobs: list[float]  # the behaviour logprob of each token
    text: str


class EngineBusy(RuntimeError):
    """New weights were offered while requests were in flight."""


class Engine(Protocol):
    policy_version: int  # of the weights now served
    max_model_len: int  # prompt + response tokens, at most

    @property
    def unfinished(self) -> int:
        """Requests submitted and not yet returned by step() or generate()."""

    def chat_prompt_ids(self, user_text: str) -> list[int]:
        """A user message in the model's chat template, as prompt token ids."""

    def submit(self, prompt_ids: list[int], constraint: Constraint, *, temperature: float,
               max_tokens: int) -> str:
        """Queue one request; returns its id."""

    def step(self) -> list[tuple[str, Generation]]:
        """Advance the requests in flight; returns (id, generation) of those that finished."""

    def generate(self, prompts: list[list[int]], constraints: list[Constraint], *,
                 temperature: float, max_tokens: int) -> list[Generation]:
        """A blocking batch, in the order of `prompts`."""

    def load_weights(self, named: Iterable[tuple[str, Any]], version: int) -> None:
        """Load (name, tensor) pairs as policy `version`; EngineBusy while requests are in flight."""

    def load_adapter(self, path: str, version: int) -> None:
        """Serve every later request with the PEFT adapter in `path` as policy `version`."""

    def close(self) -> None:
        """Release what the engine holds (processes, threads); nothing is generated after it."""


class WeightTransferEngine(Engine, Protocol):
    """An engine whose weights come over vLLM's weight-transfer engine (NCCL), driven by the
    trainer in four phases; the caller drains its requests before start and submits none until
    finish."""

    def init_weight_transfer(self, init_info: dict) -> None: ...

    def start_weight_update(self) -> None: ...

    def update_weights(self, update_info: dict) -> None: ...

    def finish_weight_update(self, version: int) -> None: ...

    def shutdown_weight_transfer(self) -> None: ...
