#!/usr/bin/env bash
# Quick start: embed a shipped recording with the default model (BirdNET v2.4 here) and show
# the top species per window. Usage: scripts/run.sh [AUDIO_FILE_OR_DIR ...]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -eq 0 ]; then
  set -- ../shared/audio/soundscape_birdnet_120s_48k.flac
fi
mkdir -p out
.venv/bin/sevensense embed "$@" --out out/quickstart.parquet
.venv/bin/sevensense show out/quickstart.parquet --limit 12
