from routers.base import BaseRouter, Decision, StepContext


class DraftOnlyRouter(BaseRouter):
    """Keep every draft step: the lower reference point. Takes no threshold."""

    name = "draft-only"
    needs_target = False
    threshold_range = None

    def route(self, ctx: StepContext) -> Decision:
        return Decision(escalate=False)
