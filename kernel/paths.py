"""Local folders the user names: created if needed and proven writable before any work starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from kernel.errors import InputError


def check_writable_dir(path: Path, label: str) -> Path:
    """Create `path` if needed and prove it is writable, or raise one line saying which path failed."""
    path = Path(path)
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise InputError(f"{label} {str(path)!r} cannot be created: {str(blocking)!r} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".dsmar-write-test-"):
            pass  # a probe of its own: runs started at once in one folder must not remove each other's
    except OSError as err:
        raise InputError(f"{label} {str(path)!r} is not writable: {err.strerror or err}") from None
    if not os.access(path, os.W_OK):
        raise InputError(f"{label} {str(path)!r} is not writable")
    return path
