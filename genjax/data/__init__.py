"""Data: toy 2-D generators, the Gaussian-mixture oracle, and batch streams."""
