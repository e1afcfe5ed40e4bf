"""Evaluation: metrics (pure functions), the paired bootstrap, the base-vs-tuned runner and its report."""
