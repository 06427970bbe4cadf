"""LoRA adapters received from the learner, written as PEFT adapter directories for vLLM.

vLLM loads a LoRA adapter from a directory (`adapter_model.safetensors` + `adapter_config.json`,
the layout peft's save_pretrained writes), so each received version is written as one:
`<root>/v00000042/`. A directory appears whole (written under a temporary name, then renamed).
Only the newest `keep` are kept on disk: the engine has read an adapter into memory by the time
a newer one is written.
"""

from __future__ import annotations

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
