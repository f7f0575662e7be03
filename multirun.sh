#!/usr/bin/env bash
# Named sweeps through Hydra --multirun; every job is its own MLflow run tagged with the sweep id.
#   ./multirun.sh <name> [extra Hydra overrides]
#   ./multirun.sh smoke                      # 5 algorithms x 2 seeds, a few iterations each
#   ./multirun.sh algorithms trainer.max_steps=100
# Compare a finished sweep:  .venv/bin/rlx-compare --sweep-id <the printed id>
set -euo pipefail
cd "$(dirname "$0")"
name="${1:-}"
if [ -z "$name" ]; then
  sed -n '2,6p' "$0"; echo "sweeps: smoke algorithms"; exit 2
fi
shift
RLX_TRAIN="${RLX_TRAIN:-.venv/bin/rlx-train}"  # a command line (may contain spaces)
sweep_id="${name}-$(date +%Y%m%d-%H%M%S)"
case "$name" in
  smoke)
    args=(algorithm=grpo,rloo,dapo,repo_r,adapo seed=0,1 trainer.max_steps=5 eval_every=5) ;;
  algorithms)
    args=(algorithm=grpo,rloo,dapo,repo_r,adapo seed=0,1,2) ;;
  *)
    echo "multirun.sh: unknown sweep '$name' (known: smoke algorithms)" >&2; exit 2 ;;
esac
echo "sweep $sweep_id: ${args[*]} $*"
$RLX_TRAIN --multirun "${args[@]}" "sweep_id=$sweep_id" "$@"
echo "sweep $sweep_id done; compare: .venv/bin/rlx-compare --sweep-id $sweep_id"
