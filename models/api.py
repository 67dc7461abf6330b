"""The pair API (Contract 2): one door for every registration method, and the only producer of a
`MethodSpec` (a method's name, options, weights checksum and effective settings)."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kernel.contracts import DEFAULT_METHOD, MIN_SIZE, MODALITIES, MethodSpec
from kernel.errors import InputError
from kernel.warp import warp_image
from models.registry import MethodEntry, Registrator, register_method, registered

__all__ = ["RegistrationResult", "Registrator", "available_methods", "method_spec", "register_method", "register_pair"]


@dataclass(frozen=True)
class RegistrationResult:
    """Displacement (2, H, W) per Contract 1, confidence (H, W) in [0, 1], moving warped onto fixed."""

    displacement: np.ndarray
    confidence: np.ndarray
    warped: np.ndarray
    method: str


def _methods() -> Mapping[str, MethodEntry]:
    import models.methods  # noqa: F401  (registers the shipped methods)

    return registered()


def available_methods() -> list[str]:
    return sorted(_methods())


def _entry(name: str) -> MethodEntry:
    methods = _methods()
    if name not in methods:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(sorted(methods))}")
    return methods[name]


# An option starts at a colon followed by `key=`: a colon inside a value (device=cuda:0) stays in it.
_OPTION_START = re.compile(r":(?=[A-Za-z_][A-Za-z0-9_]*=)")


def _parse_spec(text: str) -> tuple[str, dict[str, Any]]:
    """`name` or `name:key=value:key=value` -> (name, options). Values are JSON (what `MethodSpec.text`
    writes, so a spec's text parses back to it), else Python literals (`True`, tuples), else text."""
    name, *pairs = _OPTION_START.split(text.strip())
    if ":" in name:
        raise InputError(f"method option {name.partition(':')[2]!r} in {text!r} is not key=value")
    options: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            options[key] = json.loads(value)
        except ValueError:
            try:
                options[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                options[key] = value
    return name, options


def method_spec(spec: str | MethodSpec, **options: Any) -> MethodSpec:
    """The `MethodSpec` of a method spec text (`dsmar:augment=1:polish=[5,3]`), or of a name with
    keyword options: name and options checked once (an unknown method or option, or a bad value, is
    one InputError line), the weights and settings resolved as the method will load them."""
    if isinstance(spec, MethodSpec):
        name, given = spec.name, {**spec.kwargs, **options}
    else:
        name, parsed = _parse_spec(spec)
        given = {**parsed, **options}
    entry = _entry(name)
    unknown = sorted(set(given) - set(entry.options))
    if unknown:
        known = ", ".join(sorted(entry.options)) or "none"
        raise InputError(f"unknown option(s) {', '.join(unknown)} for method {name}; known: {known}")
    normalised = {}
    for key, value in given.items():
        try:
            normalised[key] = entry.options[key](value)
        except ValueError as err:
            raise InputError(f"method {name} option {key}={value!r}: {err}") from None
    weights_sha256, settings = entry.resolve(normalised)
    return MethodSpec(name, normalised, weights_sha256, settings)


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
    method: str | MethodSpec = DEFAULT_METHOD,
    **options,
) -> RegistrationResult:
    """Register `moving` onto `fixed` (same H, W) and return the field, its confidence and the warp.

    `method` is a name or spec text (`dsmar:augment=1`), with `options` as keywords, or a `MethodSpec`, which
    must resolve here to the weights and settings it records (a process with other DSMAR_WEIGHTS refuses
    rather than differ from what the cube says)."""
    spec = method_spec(method, **options)
    if isinstance(method, MethodSpec) and spec.fingerprint != method.fingerprint:
        raise InputError(
            f"method {method.text} resolves here to weights {spec.weights_sha256} and settings {dict(spec.settings)}, "
            f"not the run's {method.weights_sha256} and {dict(method.settings)}: give every process the same weights"
        )
    f, m = validate_pair(fixed, moving, fixed_modality, moving_modality)
    registrator: Registrator = _entry(spec.name).factory()
    displacement, confidence = registrator(
        f, m, fixed_modality=fixed_modality, moving_modality=moving_modality, **spec.kwargs
    )
    displacement = np.ascontiguousarray(displacement, dtype=np.float32)
    confidence = np.clip(np.nan_to_num(np.asarray(confidence, dtype=np.float32), nan=0.0), 0.0, 1.0)
    expected = (2, *f.shape[-2:])
    if displacement.shape != expected or confidence.shape != expected[1:]:
        raise RuntimeError(f"method {spec.name!r} returned shapes {displacement.shape}, {confidence.shape}")
    warped = warp_image(np.asarray(moving, dtype=np.float32), displacement)
    return RegistrationResult(displacement, confidence, warped, spec.name)
