"""Judges score the newest step given the problem and the steps before it, in [0, 1] (higher is
better). Registered by name in reasoning.registry (`JUDGES`); `make_judge(name, **options)` builds one."""

from __future__ import annotations

from typing import Any

from judges.base import Judge
from reasoning.errors import BackendUnavailableError, ConfigError
from reasoning.registry import JUDGES


def make_judge(name: str | Judge, **options: Any) -> Judge:
    if not isinstance(name, str):
        return name
    try:
        judge_class = JUDGES.load(name)
    except ImportError as e:  # the PRM judge runs on transformers, an extra
        if (e.name or "").split(".")[0] in ("torch", "transformers"):
            raise BackendUnavailableError(f"judge {name!r} needs {e.name.split('.')[0]}, which is not installed: "
                                          'pip install "specstep[transformers]"') from None
        raise
    try:
        return judge_class(**options)
    except TypeError as e:
        raise ConfigError(f"bad option for judge {name!r}: {e}") from None


__all__ = ["JUDGES", "Judge", "make_judge"]
