"""Evaluation: guardrail metrics (metrics.py), PNG plots (plots.py) and the `evaluate` stage (evaluate.py)."""

from duelguard.evaluation.evaluate import evaluate_classifier

__all__ = ["evaluate_classifier"]
