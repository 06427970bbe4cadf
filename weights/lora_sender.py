"""Weight sync of a LoRA policy: the base once, then only the adapter (no merge-and-push).

The first sync sends the frozen base over the full bucketed path (the actors' `update_weights`),
labelled with the version the actors already serve, then the adapter as the new version (the
actors' `update_adapter`, which serves it as a vLLM LoRA request). Every later sync sends the
adapter alone. Both travel through WeightSender over the same weight group, one after the
other (the receivers must join the broadcasts in the order they are sent), each bounded on the
control side by `timeout_s`.

GPU engines (vLLM's AsyncLLM) take no full weights through the actor: there the base goes once over
vLLM's weight-transfer engine (`base_sync`, weights/vllm_transfer.py, whose NCCL group is
closed after it) and the adapters over the weight group as on the CPU path (gloo: they are small).

NOT guaranteed: on a resumed run, between the base sync and the first adapter sync the engines
serve the bare base under the resumed version.
"""

from __future__ import annotations

import ray

from weights.broadcast import WeightSender
from weights.peft_tensors import adapter_config, adapter_tensors, base_tensors


class LoraSender:
    def __init__(self, group, policy, bucket_bytes: int, timeout_s: float, base_sync=None, generation: int = 0):
        self.group, self.policy, self.base_sync, self.generation = group, policy, base_sync, generation
        self.bucket_bytes, self.timeout_s = bucket_bytes, timeout_s
        self.adapter_config = adapter_config(policy)
        self.base_sent = False
        self._adapter = WeightSender(group, adapter_tensors(policy), bucket_bytes)
        self.last: dict[str, int] = {}

    def sync(self, actors: list, version: int) -> int:
        """Send `version` to every actor; returns the bytes of this sync's adapter broadcast
        (the base bytes of a first sync are in `last["base_bytes"]`)."""
        self.last = {}
        if not self.base_sent and self.base_sync is not None:
            self.last["base_bytes"] = self.base_sync.sync(version - 1)
            self.base_sync.close()
            self.base_sent = True
        if not self.base_sent:
            named = base_tensors(self.policy)
            base = WeightSender(self.group, named, self.bucket_bytes)  # once: buffers not kept
            refs = [a.update_weights.remote(version - 1, base.layout, self.generation) for a in actors]
            self.last["base_bytes"] = base.send(named, version - 1)
            ray.get(refs, timeout=self.timeout_s)
            self.base_sent = True
        refs = [a.update_adapter.remote(version, self._adapter.layout, self.adapter_config, self.generation)
                for a in actors]
        sent = self._adapter.send(adapter_tensors(self.policy), version)
        ray.get(refs, timeout=self.timeout_s)
        self.last["adapter_bytes"] = sent
        return sent
