"""Weight sync of a LoRA policy: the base once, then only the adapter (no merge-and-push).

The first sync sends the frozen base through `base`, a WeightSender of the base tensors,
labelled with the version the actors already serve, and closes it; then the adapter as the new
version (the actors' `update_adapter(version, layout, adapter_config, generation)`, which serves
it as a vLLM LoRA request). Every later sync sends the adapter alone, through a
BucketBroadcaster over the weight group, bounded on the control side by `timeout_s`.

- CPU engines: `base` is the full bucketed path over the same weight group (FullModelSender,
  weights/full_sender.py: the actors' `update_weights`); the default when `base` is None. The
  base and the adapter go one after the other (the receivers join the broadcasts in the order
  they are sent).
- GPU engines (vLLM's AsyncLLM) take no full weights through the actor: `base` is a
  VLLMTransferSender (weights/vllm_transfer.py, whose NCCL group is closed after it) and the
  adapters go over the weight group as on the CPU path (gloo: they are small).

`sync` returns the adapter's bytes; `last` holds this sync's figures (`base_bytes` on the first).

NOT guaranteed: on a resumed run, between the base sync and the first adapter sync the engines
serve the bare base under the resumed version; a failed first sync leaves the base unsent (the
next sender sends it again).
"""

from __future__ import annotations

import ray

from weights.base import WeightSender
from weights.broadcast import BucketBroadcaster
from weights.full_sender import FullModelSender
from weights.peft_tensors import adapter_config, adapter_tensors, base_tensors


class LoraSender(WeightSender):
    def __init__(self, actors: list, group, policy, bucket_bytes: int, timeout_s: float, *,
                 base: WeightSender | None = None, generation: int = 0):
        self.actors, self.group, self.policy, self.generation = list(actors), group, policy, generation
        self.bucket_bytes, self.timeout_s = bucket_bytes, timeout_s
        self.base = base
        self.adapter_config = adapter_config(policy)
        self.base_sent = False
        self._adapter: BucketBroadcaster | None = BucketBroadcaster(group, adapter_tensors(policy), bucket_bytes)
        self.last: dict[str, int] = {}

    def _base(self) -> WeightSender:
        if self.base is None:  # made at the first sync; closed after it, so its buffers are not kept
            policy = self.policy
            self.base = FullModelSender(lambda: base_tensors(policy), self.actors, self.group, self.generation,
                                        self.bucket_bytes, self.timeout_s)
        return self.base

    def sync(self, version: int) -> int:
        """Send `version` to every actor; returns the bytes of this sync's adapter broadcast
        (the base bytes of a first sync are in `last["base_bytes"]`)."""
        if self._adapter is None:
            raise RuntimeError("weight sender closed")
        self.last = {}
        if not self.base_sent:
            base = self._base()
            self.last["base_bytes"] = base.sync(version - 1)
            base.close()
            self.base_sent = True
        refs = [a.update_adapter.remote(version, self._adapter.layout, self.adapter_config, self.generation)
                for a in self.actors]
        sent = self._adapter.send(adapter_tensors(self.policy), version)
        ray.get(refs, timeout=self.timeout_s)
        self.last["adapter_bytes"] = sent
        return sent

    def close(self) -> None:
        """Close the base's sender (a GPU base sync that failed leaves vLLM's NCCL group open)
        and drop the adapter's buffers."""
        if self.base is not None:
            self.base.close()
        self._adapter = None
