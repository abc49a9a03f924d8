import hashlib
import random

from routers.base import BaseRouter, StepContext


class RandomRouter(BaseRouter):
    """Escalate each step with probability tau (the threshold): the fair baseline at a matched
    escalation rate. Decisions are reproducible: they depend on `seed`, the problem and the step."""

    name = "random"
    default_threshold = 0.5
    escalate_above = False

    def __init__(self, threshold: float | None = None, seed: int = 0):
        super().__init__(threshold)
        self.seed = seed

    def score(self, ctx: StepContext) -> float:
        key = f"{self.seed}|{ctx.problem.id}|{ctx.problem.question}|{ctx.step_index}".encode()
        return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big")).random()

