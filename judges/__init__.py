"""Judges score the newest step given the problem and the steps before it."""

from judges.base import Judge

__all__ = ["Judge"]
