"""The options of the window-matching methods (`cfog`, `mind`): the fields of `WindowConfig`, typed as declared."""

from __future__ import annotations

import dataclasses

from models.classical.register import WindowConfig
from models.registry import Normaliser, integer, number

WINDOW_OPTIONS: dict[str, Normaliser] = {
    f.name: integer() if isinstance(f.default, int) else number() for f in dataclasses.fields(WindowConfig)
}
