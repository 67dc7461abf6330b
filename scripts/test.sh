#!/usr/bin/env bash
# Set up (idempotent), check (lint, format, types: scripts/check.sh) and run the whole test suite; the tests
# start the services they use themselves (a rustac STAC API, a Prefect server, a Dask LocalCluster) on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test bench  # bench: GeFolki, which its peer test runs
scripts/check.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90
exec .venv/bin/python -m pytest "$@"
