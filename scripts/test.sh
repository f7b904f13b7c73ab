#!/usr/bin/env bash
# The test command: lint, type-check, then the whole pytest suite (real models, real audio,
# real servers on 127.0.0.1). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=true
paths=(service tests bench)
[ -d load_tests ] && paths+=(load_tests)
echo "[test] ruff"
.venv/bin/ruff check "${paths[@]}"
.venv/bin/ruff format --check "${paths[@]}"
echo "[test] mypy"
.venv/bin/mypy
echo "[test] pytest"
.venv/bin/python -m pytest "$@"
