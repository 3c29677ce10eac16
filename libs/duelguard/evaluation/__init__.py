"""Evaluation: PNG plots (plots.py) and the `evaluate` stage (evaluate.py). The metrics themselves are
duelguard.metrics (plain numpy, shared with threshold calibration and scoring); the frozen sample is
duelguard.evalset."""
