"""Lazy registries: a name from config → a class, imported by dotted path only when asked for.

Both of the actors' registries use this (actors/engine/__init__.py: `engine.backend`,
actors/env/__init__.py: `env.name`), the way verl's workers/rollout/base.py does, so importing a
registry imports none of its implementations (no vLLM, no Playwright until one is chosen).

NOT guaranteed: that a registered path imports on this machine (a missing dependency raises
ImportError from `load`, naming the module).
"""

from __future__ import annotations

import importlib


def load(key: str, name: str, registry: dict[str, str]):
    """The object registered as `name` ("package.module.Name"), imported now. An unknown name
    raises ValueError naming the config key, the name and the known names."""
    if name not in registry:
        raise ValueError(f"unknown {key} {name!r}; known: {', '.join(sorted(registry))}")
    module, _, attr = registry[name].rpartition(".")
    return getattr(importlib.import_module(module), attr)
