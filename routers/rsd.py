from routers.judged import JudgedRouter


class RSDRouter(JudgedRouter):
    """Reward-guided Speculative Decoding: keep the draft step when its process-reward score >= tau.
    The judge is a PRM (judge options: model=DIR, style=classification|value); `judge=rollout`
    gives Monte-Carlo values where no PRM exists. tau in [0, 1]; default 0.7."""

    name = "rsd"
    default_threshold = 0.7
    default_judge = "prm"
