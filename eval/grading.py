"""Grading lives in the core (reasoning.grading), since `Solution.correct` grades; re-exported here."""

from reasoning.grading import REL_TOL, Grade, Method, Rule, grade, normalize_text, to_number

__all__ = ["REL_TOL", "Grade", "Method", "Rule", "grade", "normalize_text", "to_number"]
