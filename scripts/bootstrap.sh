#!/usr/bin/env bash
# Creates .venv, installs the locked dependencies and builds the model artifacts.
# Idempotent: a second run reinstalls nothing unless pyproject.toml or constraints.txt changed,
# and rebuilds no artifact whose manifest and checksum are already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.sevensense-install-stamp
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV"
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  echo "[bootstrap] installing locked dependencies (about a minute on a fresh machine)"
  log=$VENV/pip-install.log
  if ! { "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip &&
         "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
           -c constraints.txt -e '.[dev]'; } >"$log" 2>&1; then
    grep -v 'is ignored: it is neither' "$log" | tail -40
    echo "[bootstrap] pip install failed; full log: $log" >&2
    exit 1
  fi
  "$VENV/bin/python" -m pip check
  echo "$want" > "$STAMP"
else
  echo "[bootstrap] dependencies up to date"
fi

if [ "${SEVENSENSE_SKIP_MODEL_BUILD:-0}" != "1" ]; then
  "$VENV/bin/sevensense" models build
fi
