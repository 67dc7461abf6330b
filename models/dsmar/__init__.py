"""DS-MAR: dual-stream multiscale encoders, deformable cross-attention, coarse-to-fine field, refinement."""

from models.dsmar.network import DSMAR, DSMARConfig

__all__ = ["DSMAR", "DSMARConfig"]
