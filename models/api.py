"""The pair API (Contract 2): one door for every registration method."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kernel.contracts import DEFAULT_METHOD, MIN_SIZE, MODALITIES
from kernel.errors import InputError
from kernel.warp import warp_image


@dataclass(frozen=True)
class RegistrationResult:
    """Displacement (2, H, W) per Contract 1, confidence (H, W) in [0, 1], moving warped onto fixed."""

    displacement: np.ndarray
    confidence: np.ndarray
    warped: np.ndarray
    method: str


class Registrator(Protocol):
    """A method: float32 (C, H, W) images with NaN as no-data in; (displacement, confidence) out."""

    def __call__(
        self, fixed: np.ndarray, moving: np.ndarray, *, fixed_modality: str, moving_modality: str, **options
    ) -> tuple[np.ndarray, np.ndarray]: ...


_METHODS: dict[str, Callable[[], Registrator]] = {}


def register_method(name: str) -> Callable[[Callable[[], Registrator]], Callable[[], Registrator]]:
    """Declare a method by a factory, so heavy imports (torch, weights) happen only when it is used."""

    def decorate(factory: Callable[[], Registrator]) -> Callable[[], Registrator]:
        _METHODS[name] = factory
        return factory

    return decorate


def available_methods() -> list[str]:
    _load_builtin_methods()
    return sorted(_METHODS)


def _load_builtin_methods() -> None:
    import models.methods  # noqa: F401  (registers the shipped methods)


def _as_chw(name: str, image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise InputError(f"{name} must have shape (H, W) or (C, H, W), got {np.shape(image)}")
    array = array.astype(np.float32)
    array[~np.isfinite(array)] = np.nan
    return array


def validate_pair(fixed: np.ndarray, moving: np.ndarray, fixed_modality: str, moving_modality: str):
    """Check and convert a pair to float32 (C, H, W); raise InputError with a one-line reason."""
    for label, modality in (("fixed_modality", fixed_modality), ("moving_modality", moving_modality)):
        if modality not in MODALITIES:
            raise InputError(f"{label} {modality!r} is not one of {', '.join(MODALITIES)}")
    f = _as_chw("fixed", fixed)
    m = _as_chw("moving", moving)
    if f.shape[-2:] != m.shape[-2:]:
        raise InputError(
            f"fixed and moving must share H, W (put them on one grid first): "
            f"fixed is {f.shape[-2:]}, moving is {m.shape[-2:]}"
        )
    if min(f.shape[-2:]) < MIN_SIZE:
        raise InputError(f"images must be at least {MIN_SIZE} x {MIN_SIZE} pixels, got {f.shape[-2:]}")
    for label, array in (("fixed", f), ("moving", m)):
        if not np.isfinite(array).any():
            raise InputError(f"{label} image has no valid pixels (all NaN or non-finite)")
    return f, m


def register_pair(
    fixed: np.ndarray,
    moving: np.ndarray,
    fixed_modality: str = "optical",
    moving_modality: str = "other",
    method: str = DEFAULT_METHOD,
    **options,
) -> RegistrationResult:
    """Register `moving` onto `fixed` (same H, W) and return the field, its confidence and the warp."""
    _load_builtin_methods()
    if method not in _METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(sorted(_METHODS))}")
    f, m = validate_pair(fixed, moving, fixed_modality, moving_modality)
    registrator = _METHODS[method]()
    displacement, confidence = registrator(
        f, m, fixed_modality=fixed_modality, moving_modality=moving_modality, **options
    )
    displacement = np.ascontiguousarray(displacement, dtype=np.float32)
    confidence = np.clip(np.nan_to_num(np.asarray(confidence, dtype=np.float32), nan=0.0), 0.0, 1.0)
    expected = (2, *f.shape[-2:])
    if displacement.shape != expected or confidence.shape != expected[1:]:
        raise RuntimeError(f"method {method!r} returned shapes {displacement.shape}, {confidence.shape}")
    warped = warp_image(np.asarray(moving, dtype=np.float32), displacement)
    return RegistrationResult(displacement, confidence, warped, method)


def check_method(method: str) -> str:
    """The method must be one the pair API knows; checked before any work starts."""
    methods = available_methods()
    if method not in methods:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(methods)}")
    return method
