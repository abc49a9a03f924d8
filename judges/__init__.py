"""Judges score the newest step given the problem and the steps before it, in [0, 1] (higher is
better). Registered by name; `make_judge(name, **options)` builds one."""

from __future__ import annotations

import importlib
from typing import Any

from judges.base import Judge
from reasoning.errors import ConfigError

# name -> "module:Class"; imported on use so that `import judges` stays light.
JUDGES: dict[str, str] = {
    "specreason": "judges.specreason:SpecReasonJudge",
    "prm": "judges.prm:PRMJudge",
    "rollout": "judges.rollout:RolloutJudge",
}


def make_judge(name: str | Judge, **options: Any) -> Judge:
    if not isinstance(name, str):
        return name
    target = JUDGES.get(name)
    if target is None:
        raise ConfigError(f"unknown judge {name!r}: choose one of {', '.join(sorted(JUDGES))}")
    module, _, cls = target.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)(**options)
    except TypeError as e:
        raise ConfigError(f"bad option for judge {name!r}: {e}") from None


__all__ = ["JUDGES", "Judge", "make_judge"]
