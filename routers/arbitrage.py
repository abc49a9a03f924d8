"""Arbitrage: a trained model predicts from draft-side signals whether the target would write a
better step, and the step is escalated when that probability is high.

Score: P(target writes a better step), in [0, 1], from `training.features` (the draft's token
log-probabilities and entropies, the step's size and content, its position, the routing history;
never the target's step). Threshold tau in [0, 1]: escalate when score > tau.

Options (strings from the CLI are converted):
  model=DIR            a router directory (router.json + model file, see routers.arbitrage_model);
                       default: the router shipped in routers/data/arbitrage-default/, if there is one
  escalation_rate=R    0 < R < 1: choose tau from the file's held-out score quantiles so that about
                       R of the steps escalate (instead of giving a threshold)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from reasoning.errors import ConfigError
from routers.arbitrage_model import LoadedRouter, load_router, tau_for_escalation_rate
from routers.base import BaseRouter, RouteContext
from training.features import features_from_context

DEFAULT_MODEL_DIR = Path(__file__).parent / "data" / "arbitrage-default"


def default_model_dir() -> Path | None:
    """The router shipped with the package, or None when none is shipped."""
    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / "router.json").is_file() else None


class ArbitrageRouter(BaseRouter):
    """Escalate when the learned P(target writes a better step) > tau (tau in [0, 1]); or give
    escalation_rate to pick tau from the router file's score quantiles."""

    name = "arbitrage"
    threshold_range = (0.0, 1.0)
    default_threshold = None

    def __init__(self, threshold: float | None = None, model: str | Path | None = None,
                 escalation_rate: float | str | None = None):
        path = self._model_path(model)
        rate = self._rate(escalation_rate)
        lo, hi = self.threshold_range
        if threshold is not None and rate is not None:
            raise ConfigError(f"router {self.name!r} takes a threshold or the option escalation_rate, not both")
        if threshold is None and rate is None:
            raise ConfigError(f"router {self.name!r} needs a threshold between {lo} and {hi} (escalate when "
                              "P(target better) > threshold) or the option escalation_rate")
        if threshold is not None:
            super().__init__(threshold)  # checks the range, with BaseRouter's message
        self.model: LoadedRouter = load_router(path)
        self.model_dir = self.model.path
        self.escalation_rate = rate
        if rate is not None:
            super().__init__(tau_for_escalation_rate(self.model.meta, rate))

    def _model_path(self, model: str | Path | None) -> Path:
        if model is None or (isinstance(model, str) and not model.strip()):
            found = default_model_dir()
            if found is None:
                raise ConfigError(f"router {self.name!r} needs a trained router file: pass model=DIR "
                                  "(train one with `specstep train-router`)")
            return found
        if not isinstance(model, (str, Path)):
            raise ConfigError(f"router {self.name!r} option model must be a directory path, got {model!r}")
        return Path(model).expanduser()

    def _rate(self, value: Any) -> float | None:
        if value is None:
            return None
        bad = ConfigError(f"router {self.name!r} option escalation_rate must be a number strictly between 0 and 1, "
                          f"got {value!r}")
        if isinstance(value, bool):
            raise bad
        try:
            rate = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise bad from None
        if math.isnan(rate) or not 0.0 < rate < 1.0:
            raise bad
        return rate

    def score(self, ctx: RouteContext) -> float:
        return self.model.predict(features_from_context(ctx))
