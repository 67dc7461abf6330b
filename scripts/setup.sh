#!/usr/bin/env bash
# Create .venv in the repository (if missing) and install dsmar into it; a no-op when nothing changed.
# Usage: scripts/setup.sh [extra...]   e.g. scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${*:-}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi
spec="."
[ -n "$extras" ] && spec=".[${extras// /,}]"
stamp=".venv/.dsmar-installed"
want="$(cat pyproject.toml | sha256sum | cut -c1-16) $spec"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    # torch first, pinned: it resolves to the CPU build on local disk instead of a multi-GB CUDA download.
    .venv/bin/python -m pip install -q torch==2.13.0
    .venv/bin/python -m pip install -q -e "$spec"
    echo "$want" > "$stamp"
fi
