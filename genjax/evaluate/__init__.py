"""Evaluation: two-sample distances for sample quality and figures of samples against data."""
