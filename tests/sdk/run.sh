#!/usr/bin/env bash
# Run the Python SDK tests (official anthropic and openai SDKs) against a real gateway.
#
#   bash tests/sdk/run.sh            # from the repository root (or anywhere)
#
# Env: TOLLGATE_BIN (default target/debug/tollgate, relative to the repo root),
#      SDK_VENV (default .venv-sdk, relative to the repo root), PYTHON (default python3).
# Extra arguments go to pytest. Exits non-zero on any failure, and when no test ran.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

venv="${SDK_VENV:-.venv-sdk}"
export TOLLGATE_BIN="${TOLLGATE_BIN:-target/debug/tollgate}"
case "$TOLLGATE_BIN" in
  /*) ;;
  *) TOLLGATE_BIN="$root/$TOLLGATE_BIN" ;;
esac

if [ ! -x "$TOLLGATE_BIN" ]; then
  echo "tests/sdk: tollgate binary not found at $TOLLGATE_BIN; build it or set TOLLGATE_BIN" >&2
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/sdk/requirements.txt

status=0
"$venv/bin/python" -m pytest tests/sdk -q "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "tests/sdk: pytest collected no tests; treating that as a failure" >&2
  exit 1
fi
exit "$status"
