"""Registration models: the pair API (Contract 2), DS-MAR, classical baselines, losses, training."""

from kernel.warp import compose, warp_image
from models.api import MODALITIES, RegistrationResult, available_methods, method_spec, register_method, register_pair

__all__ = [
    "MODALITIES",
    "RegistrationResult",
    "available_methods",
    "compose",
    "method_spec",
    "register_method",
    "register_pair",
    "warp_image",
]
