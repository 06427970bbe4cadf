"""What both vLLM engines (actors/engine/vllm_cpu.py, vllm_gpu.py) share on the vLLM side:
the sampling parameters of a request and the Generation of a finished one.

Every request asks for `logprobs=0` (vLLM then returns the sampled token's logprob, computed
over the distribution it sampled from: masked under a constraint) and for its final output
only. vLLM is imported inside the functions, so importing this module does not import it.

NOT guaranteed: anything about the other outputs vLLM could return (top-k logprobs, partial
outputs): they are not asked for.
"""

from __future__ import annotations

from actors.engine.base import Constraint, Generation, Grammar


def structured_outputs(constraint: Constraint):
    """vLLM's StructuredOutputsParams for an engine constraint (None: unconstrained)."""
    if not constraint:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if isinstance(constraint, Grammar):
        return StructuredOutputsParams(grammar=constraint.ebnf)
    return StructuredOutputsParams(choice=list(constraint))


def sampling_params(constraint: Constraint, temperature: float, max_tokens: int):
    """vLLM SamplingParams for one request: the sampled token's logprob, the final output only."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(temperature=temperature, max_tokens=max_tokens, logprobs=0,
                            structured_outputs=structured_outputs(constraint))
    params.output_kind = RequestOutputKind.FINAL_ONLY
    return params


def generation(output) -> Generation:
    """The Generation of a finished vLLM RequestOutput (its first and only completion)."""
    o = output.outputs[0]
    lps = [step[tok].logprob for tok, step in zip(o.token_ids, o.logprobs)]
    return Generation(list(o.token_ids), lps, o.text)
