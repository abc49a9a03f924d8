from routers.judged import JudgedRouter


class SpecReasonRouter(JudgedRouter):
    """SpecReason: the target grades the draft step (0-9, read as expected digit / 9); keep the draft
    step when the score >= tau, else the target rewrites it. tau in [0, 1]; SpecReason's default 7/9."""

    name = "specreason"
    default_threshold = 7 / 9
    default_judge = "specreason"
