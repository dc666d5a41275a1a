"""Evaluation: simulated problems with their truth, metrics, and the tables that score
fitted estimators against the exact references."""
