#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what it needs, then runs pytest.
# Pass pytest arguments through, e.g. `scripts/test.sh -m "not stack"` to skip the server tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo "sudo")
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y prometheus
fi
python3 -m pip install --quiet --upgrade pip
python3 -m pip install --quiet -c scripts/constraints.txt -e '.[test]'
exec python3 -m pytest "$@"
