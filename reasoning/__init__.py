"""specstep: step-level speculative reasoning.

A small draft model writes each step of a chain of thought; a router decides whether the large
target model rewrites it. `solve()` runs one problem; `Solver` loads the models once.
"""

from reasoning.api import DEFAULT_DRAFT, DEFAULT_ROUTER, DEFAULT_TARGET, Solver, solve
from reasoning.controller import Limits
from reasoning.errors import ConfigError, ModelSpecError, SpecstepError
from reasoning.specs import ModelSpec, parse_spec
from reasoning.types import Costs, Problem, Solution, StageCost, Step

__all__ = [
    "DEFAULT_DRAFT", "DEFAULT_ROUTER", "DEFAULT_TARGET", "ConfigError", "Costs", "Limits", "ModelSpec",
    "ModelSpecError", "Problem", "Solution", "Solver", "SpecstepError", "StageCost", "Step", "parse_spec",
    "solve",
]
