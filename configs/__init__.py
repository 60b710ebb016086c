"""Experiment configs (ml_collections); each file's docstring gives its command and result."""
