"""Evaluation: datasets, grading, and accuracy-versus-latency sweeps (see the evaluation issue)."""
