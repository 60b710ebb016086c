"""Flax linen networks; they know nothing of the process they are trained for."""
from genjax.nets.mlp import TimeConditionedMLP

__all__ = ["TimeConditionedMLP"]
