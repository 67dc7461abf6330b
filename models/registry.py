"""The table of registration methods: each declares its factory, the options it takes and how it resolves
the weights and settings that fix its output (as torchgeo's `get_model`/`get_weight` pair).

Methods register themselves here on import (`models.methods`); `models.api` reads the table and is the
only place that turns a method name and options into a `kernel.contracts.MethodSpec`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class Registrator(Protocol):
    """A method: float32 (C, H, W) images with NaN as no-data in; (displacement, confidence) out."""

    def __call__(
        self, fixed: np.ndarray, moving: np.ndarray, *, fixed_modality: str, moving_modality: str, **options
    ) -> tuple[np.ndarray, np.ndarray]: ...


# An option's normaliser: the parsed value in, the value the method takes out; ValueError says what is wrong.
Normaliser = Callable[[Any], Any]
# (weights sha256 or None, effective settings) for the given normalised options.
Resolver = Callable[[Mapping[str, Any]], tuple[str | None, dict[str, Any]]]


def _no_weights(options: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """A method without weights or tuned defaults: its settings are the options it is given."""
    return None, dict(options)


@dataclass(frozen=True)
class MethodEntry:
    """One registered method: `factory` builds the registrator (heavy imports happen only then), `options`
    names every option it takes with its normaliser, `resolve` gives the weights checksum and settings."""

    name: str
    factory: Callable[[], Registrator]
    options: Mapping[str, Normaliser] = field(default_factory=dict)
    resolve: Resolver = _no_weights


_METHODS: dict[str, MethodEntry] = {}


def register_method(
    name: str, options: Mapping[str, Normaliser] | None = None, resolve: Resolver | None = None
) -> Callable[[Callable[[], Registrator]], Callable[[], Registrator]]:
    """Declare a method by its factory, the options it takes and (for methods with weights) its resolver."""

    def decorate(factory: Callable[[], Registrator]) -> Callable[[], Registrator]:
        _METHODS[name] = MethodEntry(name, factory, dict(options or {}), resolve or _no_weights)
        return factory

    return decorate


def registered() -> Mapping[str, MethodEntry]:
    """The methods registered so far, by name (`models.api` loads the shipped ones first)."""
    return _METHODS


def integer(minimum: int = 0, choices: tuple[int, ...] = ()) -> Normaliser:
    def normalise(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise ValueError(f"must be an integer >= {minimum}")
        if choices and value not in choices:
            raise ValueError(f"must be one of {', '.join(map(str, choices))}")
        return int(value)

    return normalise


def number(minimum: float = 0.0) -> Normaliser:
    def normalise(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | np.number) or value < minimum:
            raise ValueError(f"must be a number >= {minimum:g}")
        return float(value)

    return normalise


def one_of(*choices: str) -> Normaliser:
    def normalise(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return str(value)

    return normalise


def text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty text")
    return value


def path(value: Any) -> str:
    """An absolute local path: the spec travels to Dask workers, whose working directory may be another."""
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ValueError("must be a file path")
    return os.path.abspath(os.path.expanduser(value))


def integers(minimum: int = 0) -> Normaliser:
    """An integer, or a list of them (each >= minimum)."""
    one = integer(minimum)

    def normalise(value: Any) -> int | list[int]:
        try:
            return [one(v) for v in value] if isinstance(value, list | tuple) else one(value)
        except ValueError:
            raise ValueError(f"must be an integer >= {minimum} or a list of them") from None

    return normalise


def keywords(value: Any) -> dict:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ValueError("must be a dict of keyword arguments")
    return value
