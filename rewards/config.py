"""RewardConfig: which pure reward function scores a finished episode (rewards/__init__.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RewardConfig:
    name: str = "success"  # success | outcome | env
    params: dict[str, Any] = field(default_factory=dict)  # bound to the function, e.g. {incorrect: -0.5}
