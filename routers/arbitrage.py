"""Arbitrage: a trained model predicts from draft-side signals whether the target would write a
better step, and the step is escalated when that probability is high.

Score: P(target writes a better step), in [0, 1], from `routers.features` (the draft's token
log-probabilities and entropies, the step's size and content, its position, the routing history;
never the target's step). Threshold tau in [0, 1]: escalate when score > tau.

Options:
  model=DIR            a router directory (router.json + model file, see routers.arbitrage_model);
                       default: the router shipped in routers/data/arbitrage-default/, if there is one
  escalation_rate=R    0 < R < 1: choose tau from the file's held-out score quantiles so that about
                       R of the steps escalate (instead of giving a threshold)
"""

from __future__ import annotations

import logging
from pathlib import Path

from reasoning.errors import ConfigError
from reasoning.specs import same_model
from routers.arbitrage_model import LoadedRouter, load_router, tau_for_escalation_rate
from routers.base import BaseRouter, StepContext
from routers.features import features_from_context

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).parent / "data" / "arbitrage-default"
# Routers shipped with the package, by the name `model=NAME` takes: "default" was trained for the bundled
# general pair (smollm2-135m -> gemma3-270m), "testbed" for testbed-draft -> testbed-target.
SHIPPED = {"default": DEFAULT_MODEL_DIR, "testbed": Path(__file__).parent / "data" / "arbitrage-testbed"}


def default_model_dir() -> Path | None:
    """The router shipped with the package, or None when none is shipped."""
    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / "router.json").is_file() else None


class ArbitrageRouter(BaseRouter):
    """Escalate when the learned P(target writes a better step) > tau (tau in [0, 1]); or give
    escalation_rate to pick tau from the router file's score quantiles. `model` is a router directory
    or the name of a shipped one ("default", "testbed"); without it, the one shipped for the models."""

    name = "arbitrage"
    threshold_range = (0.0, 1.0)
    default_threshold = None

    def __init__(self, threshold: float | None = None, model: str | Path | None = None,
                 escalation_rate: float | None = None):
        lo, hi = self.threshold_range
        if threshold is not None and escalation_rate is not None:
            raise ConfigError(f"router {self.name!r} takes a threshold or the option escalation_rate, not both")
        if threshold is None and escalation_rate is None:
            raise ConfigError(f"router {self.name!r} needs a threshold between {lo} and {hi} (escalate when "
                              "P(target better) > threshold) or the option escalation_rate")
        if escalation_rate is not None and not 0.0 < escalation_rate < 1.0:  # NaN fails it too
            raise ConfigError(f"router {self.name!r} option escalation_rate must be a number strictly between 0 "
                              f"and 1, got {escalation_rate!r}")
        self.model: LoadedRouter = load_router(self._model_path(model))
        self._warned: set[str] = set()  # mismatch warnings given, shared by the per-solve copies
        self.model_dir = self.model.path
        self.escalation_rate = escalation_rate
        if escalation_rate is not None:
            threshold = tau_for_escalation_rate(self.model.meta, escalation_rate)
        super().__init__(threshold)

    def _model_path(self, model: str | Path | None) -> Path:
        if model is None or (isinstance(model, str) and not model.strip()):
            found = default_model_dir()
            if found is None:
                raise ConfigError(f"router {self.name!r} needs a trained router file: pass model=DIR "
                                  "(train one with `specstep train-router`)")
            return found
        if isinstance(model, str) and model.strip() in SHIPPED and not Path(model).exists():
            return SHIPPED[model.strip()]
        return Path(model).expanduser()

    def score(self, ctx: StepContext) -> float:
        if not getattr(self, "_checked", False):
            self._checked = True
            self._warn_mismatch(ctx)
        return self.model.predict(features_from_context(ctx))

    def _warn_mismatch(self, ctx: StepContext) -> None:
        """One warning, over all solves, when the models or limits differ from those the router was trained
        with."""
        want = self.model.meta.trained_with
        cfg = ctx.config
        have = {"draft": cfg.draft, "target": cfg.target, "step_tokens": cfg.step_tokens, "max_tokens": cfg.max_tokens}

        def differs(k: str) -> bool:  # models compared as parsed specs (reasoning.specs.same_model)
            return not same_model(str(want[k]), str(have[k])) if k in ("draft", "target") else want[k] != have[k]

        diff = [f"{k} {have[k]!r} (trained with {want[k]!r})" for k in have if k in want and differs(k)]
        what = ", ".join(diff)
        if what and what not in self._warned:
            self._warned.add(what)
            log.warning("arbitrage router %s was trained on other traces: %s; its scores may not transfer",
                        self.model_dir, what)
