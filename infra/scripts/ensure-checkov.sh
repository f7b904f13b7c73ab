#!/usr/bin/env bash
# Idempotently provide checkov in its own virtualenv at <repo root>/.venv-checkov.
# checkov pins an old boto3 (among others), so it never shares the project's .venv.
# Re-running is cheap: an existing venv with the pinned version is reused as is.
set -euo pipefail

CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${CHECKOV_VENV:-$REPO_ROOT/.venv-checkov}"
PYTHON="${PYTHON:-python3}"

installed_version() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null || true
from importlib.metadata import version
print(version("checkov"))
PY
}

if [[ -x "$VENV/bin/checkov" && "$(installed_version)" == "$CHECKOV_VERSION" ]]; then
  echo "checkov $CHECKOV_VERSION already present in $VENV"
  exit 0
fi

echo "installing checkov $CHECKOV_VERSION into $VENV"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
"$VENV/bin/checkov" --version
