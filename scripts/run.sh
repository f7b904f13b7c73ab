#!/usr/bin/env bash
# Start the 7sense service graph (Entry gateway + GPU and CPU model services) on the default
# model: Perch 2.0 where its weights are present, BirdNET v2.4 otherwise (always, here).
# Env: HOST (default 127.0.0.1), PORT (default 3000), RUN_WORKER (default 1), SEVENSENSE_PROFILE,
# SEVENSENSE_* settings.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=true
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-3000}"
KEY="$(.venv/bin/sevensense keys dev 2>/dev/null || true)"
cat <<MSG
7sense is starting on http://${HOST}:${PORT}  (ready when /readyz answers 200)
  API docs:  http://${HOST}:${PORT}/docs      metrics: /metrics
MSG
if [ -n "$KEY" ]; then
  cat <<MSG
  dev key:   ${KEY}   (all scopes; only its hash is stored in .state/api_keys.json)
  try:       curl -H "X-API-Key: \$(cat .state/dev-api-key)" \\
               -F audio=@../shared/audio/birdnet_sample_3s_48k.wav http://${HOST}:${PORT}/embed
MSG
else
  echo "  keys:      configured keys only (sevensense keys list)"
fi
# The worker drains deferred requests (202 answers) from the embedded queue on this host;
# RUN_WORKER=0 leaves that to a worker started elsewhere (e.g. with an SQS queue).
pids=()
stop() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait; }
trap stop EXIT INT TERM
if [ "${RUN_WORKER:-1}" = "1" ]; then
  echo "  worker:    sevensense worker --queues deferred (log: .state/worker.log)"
  mkdir -p .state
  .venv/bin/sevensense worker --queues deferred >>.state/worker.log 2>&1 &
  pids+=($!)
fi
.venv/bin/bentoml serve sevensense.serving.service:Entry --host "$HOST" --port "$PORT" &
pids+=($!)
wait -n "${pids[@]}"
