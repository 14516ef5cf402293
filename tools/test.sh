#!/usr/bin/env bash
# Set up (idempotent) and run the default test suite; extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup.sh"
cd "$ROOT"
export PYTHONUNBUFFERED=1
exec "${SAYANYTHING_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
