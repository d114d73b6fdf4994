"""Metrics with intervals, baselines, predictors and the speed harness."""
