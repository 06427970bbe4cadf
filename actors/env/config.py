"""Typed env configs (the `env` config group): EnvConfig, what every env takes, and one
subclass per env, named by `name` (the registry key, actors/env/__init__.py: ENVS).

Each default lives here and only here (launch registers these as Hydra structured configs, so an
unknown key is refused by name). Imports nothing heavy (no Playwright).

NOT guaranteed: that the tasks exist (the actor asks the env's registry entry, check_task, when
it starts); combinations such as observation "axtree" with ref_mode "id" are refused by the env
when its first page is built, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EnvConfig:
    name: str  # which env (actors/env/__init__.py: ENVS); a trajectory's env is "<name>/<task>"
    task: str = "click-button"
    tasks: Any = None     # list of task names (uniform), or {name: weight}; null: [task]
    max_steps: int = 10
    max_steps_by_task: dict[str, int] = field(default_factory=dict)  # per-task overrides, e.g. {click-dialog: 5, enter-text: 20}
    hang_timeout_s: float = 30.0  # a reset or step unfinished by then ends the episode as "unknown"
    max_failures: int = 10  # page failures in a row on one slot before the actor gives up


@dataclass
class MiniWoBConfig(EnvConfig):
    """MiniWoB++ task pages (the `miniwob` wheel) in the actor's own Chromium."""

    name: str = "miniwob"
    ref_mode: str = "text"     # text: click("submit"); id: click(12) (see ARCHITECTURE.md on learnability)
    observation: str = "dom"   # dom: compact element list; axtree: Playwright's ARIA snapshot (ref_mode text)
    screenshot: bool = False   # PNG of the task area per observation; its sha256 goes on the step
    step_timeout_s: float = 5.0  # Playwright's timeout for one page action
    episode_max_time_s: float | None = None  # the page's own episode timer; null: off
    chromium: str = "/usr/bin/chromium"
