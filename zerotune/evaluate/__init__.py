"""Evaluation stage: score a model's predictions on a test set, probe robustness, write the report."""
