from routers.base import BaseRouter, Decision, StepContext


class TargetOnlyRouter(BaseRouter):
    """The target writes every step and no draft is run: the upper reference point."""

    name = "target-only"
    needs_draft = False
    threshold_range = None

    def route(self, ctx: StepContext) -> Decision:
        return Decision(escalate=True)
