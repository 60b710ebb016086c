"""Probability paths: forward processes between data (t = 0) and a prior (t = T)."""
from genjax.processes.base import DiffusionProcess
from genjax.processes.discrete import (
    ddpm_betas,
    ddpm_marginal_coefficients,
    grid_times,
    smld_marginal_coefficients,
    smld_sigmas,
)
from genjax.processes.edm import EDMProcess
from genjax.processes.flow_matching import FlowMatchingPath
from genjax.processes.pfgmpp import PFGMPPProcess
from genjax.processes.subvp import SubVPSDE
from genjax.processes.ve import VESDE
from genjax.processes.vp import VPSDE

__all__ = [
    "DiffusionProcess",
    "EDMProcess",
    "FlowMatchingPath",
    "PFGMPPProcess",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "ddpm_betas",
    "ddpm_marginal_coefficients",
    "grid_times",
    "smld_marginal_coefficients",
    "smld_sigmas",
]
