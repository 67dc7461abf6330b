"""`cfog`: channel features of oriented gradients (Ye et al. 2019) matched on a grid of windows by FFT,
coarse to fine, with outlier rejection and a smooth dense field (models.classical)."""

from __future__ import annotations

from functools import partial

from models.classical.features import cfog
from models.classical.register import window_method
from models.methods.windows import WINDOW_OPTIONS
from models.registry import register_method

ORIENTATIONS = 9
SIGMA = 0.8


@register_method("cfog", options=WINDOW_OPTIONS)
def make_cfog():
    return window_method(partial(cfog, orientations=ORIENTATIONS, sigma=SIGMA))
