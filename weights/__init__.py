"""The weight plane: from learner rank 0 to every engine, a `policy_version` on every sync.

Learner side (rank 0):
- `plane.WeightPlane`: the actors, the weight group joining them to rank 0, the sender, and
  recovery (a new group and a new sender after an actor died); `config.WeightsConfig` its config.
- `base.WeightSender`: the one sender interface, `sync(version) -> bytes` and `close()`;
  `factory.make_sender` picks the implementation from (GPU engines?, LoRA?):
  `full_sender.FullModelSender` (bucketed broadcast over the group; CPU engines),
  `lora_sender.LoraSender` (the base once, then only the adapter),
  `vllm_transfer.VLLMTransferSender` (vLLM's NCCL weight-transfer engine; GPU engines).
- Below them: `broadcast.BucketBroadcaster` (packs buckets, broadcasts them on a group),
  `buckets` (the layout: large tensors alone, small ones packed by dtype), `peft_tensors`
  (a LoRA policy's base and adapter tensors).
Actor side: `group.open_weight_group` to join, `receiver.WeightReceiver` to receive buckets.
The actors' calls the senders make over Ray: `join_weight_group`, `update_weights(version,
layout, generation)`, `update_adapter(version, layout, adapter_config, generation)`, and
`transfer_init/start/update/finish/shutdown` for vLLM's transfer engine.

Imports none of `actors`, `learner`, `buffer`. Importing `weights` (or any module in it)
imports no vLLM; vllm_transfer imports it at its first sync.

NOT guaranteed: anything across a change of the model's parameter names, shapes or dtypes
(layouts are built once per sender); syncs from more than one thread.
"""
