#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what it needs, lints, then runs pytest.
# Pass pytest arguments through, e.g. `scripts/test.sh -m "not stack"` to skip the server tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: Prometheus with promtool (the metrics tests), Chromium and its driver (pages a person looks at),
# Go (its strconv and encoding/json are the oracle of the ClickHouse exporter's value texts, tests/gojson).
missing=()
{ command -v prometheus && command -v promtool; } >/dev/null || missing+=(prometheus)
{ command -v chromium && command -v chromedriver; } >/dev/null || missing+=(chromium chromium-driver)
command -v go >/dev/null || missing+=(golang-go)
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo "sudo")
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

python3 -m pip install --quiet --upgrade pip
python3 -m pip install --quiet -c scripts/constraints.txt -e '.[test]'

# Arize Phoenix gets a virtualenv of its own: it needs graphql-core 3.3, mlflow needs < 3.3.
phoenix_venv="${OTEL_RAI_TEST_VENVS:-$HOME/.cache/otel-rai-test}/phoenix"
if [ ! -x "$phoenix_venv/bin/phoenix" ]; then
    python3 -m venv "$phoenix_venv"
    "$phoenix_venv/bin/python" -m pip install --quiet --upgrade pip
    "$phoenix_venv/bin/python" -m pip install --quiet -c scripts/constraints-phoenix.txt arize-phoenix
fi
export OTEL_RAI_PHOENIX="$phoenix_venv/bin/phoenix"

# The oracles of the monitoring tests that cannot share our environment get virtualenvs of their own too:
# nannyml pins xgboost and lightgbm older than ours (and imports statsmodels without requiring it);
# evidently 0.7 does not run on pandas 3. tests/conftest.py (venv_python) finds them here.
oracle_venv() {  # NAME REQUIREMENT...
    local venv="${OTEL_RAI_TEST_VENVS:-$HOME/.cache/otel-rai-test}/$1"
    shift
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet "$@"
    fi
}
oracle_venv nannyml nannyml==0.13.1 statsmodels==0.15.0
oracle_venv evidently evidently==0.7.23 "pandas<3"
# A test whose server or browser is missing fails here instead of skipping.
export OTEL_RAI_TEST_STRICT=1

ruff check .
lint-imports
exec python3 -m pytest "$@"
