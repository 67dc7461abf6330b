"""`mind`: MIND-SSC self-similarity descriptors (Heinrich et al. 2013) with the same coarse-to-fine window
matching, outlier rejection and dense interpolation as `cfog` (models.classical)."""

from __future__ import annotations

from functools import partial

from models.api import register_method
from models.classical.features import mind_ssc
from models.classical.register import register_windows
from models.methods.cfog import window_config
from models.preprocess import to_gray

RADIUS = 1
DILATION = 2


@register_method("mind")
def make_mind():
    def run(fixed, moving, *, fixed_modality, moving_modality, **options):
        describe = partial(mind_ssc, radius=RADIUS, dilation=DILATION)
        return register_windows(
            to_gray(fixed, fixed_modality), to_gray(moving, moving_modality), describe, window_config(options)
        )

    return run
