"""specstep: step-level speculative reasoning.

A small draft model writes each step of a chain of thought; a router decides whether the large
target model rewrites it. `solve()` runs one problem; `Solver` loads the models once.
Attributes are imported on first use, so `import reasoning.errors` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Solver": "reasoning.api", "solve": "reasoning.api", "solve_many": "reasoning.api",
    "DEFAULT_DRAFT": "reasoning.options", "DEFAULT_ROUTER": "reasoning.options", "DEFAULT_TARGET": "reasoning.options",
    "Limits": "reasoning.options",
    "ConfigError": "reasoning.errors", "ModelSpecError": "reasoning.errors", "SpecstepError": "reasoning.errors",
    "ModelSpec": "reasoning.specs", "parse_spec": "reasoning.specs",
    "Costs": "reasoning.types", "Problem": "reasoning.types", "Solution": "reasoning.types",
    "StageCost": "reasoning.types", "Step": "reasoning.types",
}
__all__ = sorted(_EXPORTS)


def _version() -> str:
    """The installed distribution's version; "0+unknown" when run from a checkout that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("specstep")
    except PackageNotFoundError:
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return _version()
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'reasoning' has no attribute {name!r}")
