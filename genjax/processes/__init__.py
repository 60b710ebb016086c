"""Probability paths: forward processes between data (t = 0) and a prior (t = T)."""
from genjax.processes.base import DiffusionProcess
from genjax.processes.vp import VPSDE

__all__ = ["DiffusionProcess", "VPSDE"]
