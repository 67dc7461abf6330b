#!/usr/bin/env bash
# Lint, format, type and layer checks with the settings in pyproject.toml ([tool.ruff], [tool.mypy]), in .venv as
# scripts/setup.sh test makes it; exits non-zero on the first check that fails.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m ruff check --quiet .
.venv/bin/python -m ruff format --check --quiet .
.venv/bin/python -m mypy
.venv/bin/python scripts/import_graph.py --check >/dev/null || .venv/bin/python scripts/import_graph.py --check
