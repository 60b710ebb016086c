"""Image U-Nets: score_sde's DDPM++ / NCSN++ and EDM's SongUNet (one network, three defaults)."""
from genjax.nets.unet.song_unet import DDPMpp, NCSNpp, SongUNet

__all__ = ["DDPMpp", "NCSNpp", "SongUNet"]
