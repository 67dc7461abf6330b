#!/usr/bin/env bash
# Mutation check of the accuracy tests: they must fail when the network is replaced by untrained weights of the
# same architecture (DSMAR_WEIGHTS), and when `identity` runs in place of the default method
# (DSMAR_TEST_DEFAULT_METHOD). Exits 0 only if both runs fail; strict xfails count as passes in each run.
# Needs ../shared/data/pairs (DSMAR_REQUIRE_PAIRS=1). pytest -x stops each run at its first failing test.
set -uo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
tests=(tests/test_dsmar_method.py tests/test_demo_e2e.py)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export DSMAR_REQUIRE_PAIRS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1

"$python" -m tests.untrained_weights "$work/untrained.pt" >/dev/null || exit 2

mutant() {  # run the tests under one mutation (env assignments); 0 when they fail, as they should
    local name="$1"
    shift
    echo "== $name: ${*}" >&2
    if env "$@" "$python" -m pytest -q -p no:cacheprovider -x "${tests[@]}" >"$work/$name.log" 2>&1; then
        echo "   the tests PASSED: they do not notice this mutation" >&2
        tail -n 3 "$work/$name.log" >&2
        return 1
    fi
    if grep -q "^ERROR " "$work/$name.log" || ! grep -q "^FAILED " "$work/$name.log"; then
        echo "   the tests did not run to a failure (errors, or no test failed):" >&2
        tail -n 5 "$work/$name.log" >&2
        return 1
    fi
    grep "^FAILED " "$work/$name.log" | head -n 5 >&2
    echo "   failed, as they should" >&2
}

status=0
mutant untrained-weights "DSMAR_WEIGHTS=$work/untrained.pt" || status=1
mutant identity-as-default DSMAR_TEST_DEFAULT_METHOD=identity || status=1
exit $status
