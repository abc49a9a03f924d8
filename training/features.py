"""The Arbitrage router's features live with the routers (routers.features); re-exported here."""

from routers.features import (
    ENTROPY_CEIL,
    FEATURE_NAMES,
    FEATURE_VERSION,
    LOGPROB_FLOOR,
    extract_features,
    features_from_context,
    features_from_step,
    features_from_summary,
    token_summary,
)

__all__ = [
    "ENTROPY_CEIL", "FEATURE_NAMES", "FEATURE_VERSION", "LOGPROB_FLOOR", "extract_features",
    "features_from_context", "features_from_step", "features_from_summary", "token_summary",
]
