"""LoRA adapters received from the learner, written as PEFT adapter directories for vLLM.

vLLM loads a LoRA adapter from a directory (`adapter_model.safetensors` + `adapter_config.json`,
the layout peft's save_pretrained writes), so each received version is written as one:
`<root>/v00000042/`. A directory appears whole (written under a temporary name, then renamed).
Only the newest `keep` are kept on disk: the engine has read an adapter into memory by the time
a newer one is written. `AdapterRequests` is what both engines (actors/engine/vllm_cpu.py,
actors/engine/vllm_gpu.py) serve the newest adapter with.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path


def adapter_root(actor_id: str) -> Path:
    """Where an actor writes its adapters: inside the run directory when there is one."""
    base = os.environ.get("FLYWHEEL_RUN_DIR") or os.path.join(os.environ.get("TMPDIR", "/tmp"), "flywheel")
    return Path(base) / "adapters" / actor_id


class AdapterDirs:
    def __init__(self, root: str | os.PathLike, keep: int = 2):
        self.root = Path(root)
        self.keep = keep

    def write(self, named, version: int, config: dict) -> Path:
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"v{int(version):08d}"
        tmp = self.root / f".tmp-{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        # Views into one received flat buffer: safetensors wants each tensor on its own storage.
        save_file({n: t.clone() for n, t in named}, str(tmp / "adapter_model.safetensors"))
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
        shutil.rmtree(final, ignore_errors=True)  # the same version again replaces it
        os.rename(tmp, final)
        for old in sorted(p for p in self.root.glob("v*") if p.is_dir())[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final


class AdapterRequests:
    """The LoRA request an engine serves every request with, one per adapter version.

    Each version gets a new adapter id: vLLM caches adapters by id, so reusing one would keep
    serving the old weights. `load` adds the new adapter through the engine's call, then removes
    the previous one.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.current = None  # the vllm LoRARequest now served, None before the first adapter
        self._ids = itertools.count(1)

    def load(self, path: str, version: int, add, remove) -> None:
        """Serve the adapter in `path` as policy `version` from now on: `add(request)` loads it
        into the engine (raising if it cannot), then `remove(lora_id)` drops the one it replaces."""
        from vllm.lora.request import LoRARequest

        if not self.enabled:
            raise RuntimeError("a LoRA adapter was sent to an engine started without engine.enable_lora")
        lora_id = next(self._ids)
        request = LoRARequest(f"policy-v{version}-{lora_id}", lora_id, str(path))
        add(request)  # loaded now, so a bad adapter fails here and the current one stays
        old, self.current = self.current, request
        if old is not None:
            remove(old.lora_int_id)
