#!/usr/bin/env bash
# Screenshots of the MLflow UI over an rlx store, taken by headless Chromium (Debian: apt-get install chromium).
#   docs/ui_screenshots.sh [sqlite:///outputs/mlflow.db] [out_dir] [experiment id]
# Starts `mlflow server` (one worker, no job execution) on a free local port, captures the experiment's
# runs page (sweeps as parent runs, training-mode view) and its charts page, then stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
uri="${1:-sqlite:///outputs/mlflow.db}"; out="${2:-outputs/ui_screenshots}"; exp="${3:-1}"
port="${RLX_UI_PORT:-5077}"
mkdir -p "$out"
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false .venv/bin/mlflow server --workers 1 --host 127.0.0.1 --port "$port" \
  --backend-store-uri "$uri" > "$out/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && break; sleep 1; done
shot() {  # name, url fragment
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,1000 \
    --virtual-time-budget=15000 --screenshot="$out/$1.png" "http://127.0.0.1:$port/#/experiments/$exp/$2" 2>/dev/null
}
shot runs "runs?workflowType=machine_learning"
shot charts "runs?viewStateShareKey=rlx-charts&compareRunsMode=CHART&workflowType=machine_learning"
echo "screenshots in $out"
