"""Envs of the rollout actors, by name (`env.name`), and what drives them.

- base.py: the Env protocol, Observation / Element, and the EnvBackend an actor holds;
- config.py: EnvConfig and one config per env (MiniWoBConfig);
- miniwob.py: MiniWoB++ task pages (AsyncMiniWoBEnv, its blocking facade MiniWoBEnv, and
  MiniWoBBackend: one Chromium per actor, browser.py), with miniwob_js.py (the page-side code)
  and observation.py (what the policy sees);
- actions.py: the action language (parser and decoding grammar), shared by every env;
- slot.py: EnvSlot, one slot that drives any Env through its backend and survives crashed and
  hung envs.

The registry (ENVS) maps a name to the EnvBackend class by dotted path; it is imported only when
asked for, so importing this package imports no Playwright.

NOT guaranteed: that a registered env's dependencies are installed here (its import fails then).
"""

from __future__ import annotations

from actors.env.config import EnvConfig
from actors.registry import load

ENVS: dict[str, str] = {
    "miniwob": "actors.env.miniwob.MiniWoBBackend",
}


def backend_class(name: str):
    """The EnvBackend class registered as `name`, imported now. An unknown name raises
    ValueError naming it and the known ones."""
    return load("env.name", name, ENVS)


def check_task(config: EnvConfig, task: str) -> None:
    """Raise ValueError if the env `config.name` has no task `task` (starts nothing)."""
    backend_class(config.name).check_task(task)


def make_env_backend(config: EnvConfig):
    """The env's backend for one actor, created now (MiniWoB++: launches its Chromium)."""
    return backend_class(config.name)(config)
