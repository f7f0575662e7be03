#!/usr/bin/env bash
# Named sweeps through Hydra --multirun; every job is its own MLflow run tagged with the sweep id.
#   ./multirun.sh <name> [extra Hydra overrides]
#   ./multirun.sh demo        # grpo vs repo_r vs rloo, one seed, then the comparison table (< 10 min)
#   ./multirun.sh paper       # {rloo,grpo,loop,dapo,gspo,repo_r,repo_r_published,repo_d,adapo} x 3 seeds, then compare
#   ./multirun.sh precision   # {dapo,grpo,repo_r} x {fp32,bf16,bf16_fp32_logprobs} x 3 seeds, then compare
#   ./multirun.sh smoke       # 5 algorithms x 2 seeds, 5 iterations each
#   ./multirun.sh sequential  # {grpo,dapo,repo_r,adapo,rloo}: task A, then task B from A's checkpoint; trainability table
#   ./multirun.sh bases       # {repo_r,repo_d,top_entropy} on each base {grpo,dapo,rloo} (algorithm.base) x 3 seeds, then compare
#   ./multirun.sh algorithms trainer.max_steps=100
# Compare any finished sweep:  .venv/bin/rlx-compare --sweep-id <the printed id>
set -euo pipefail
cd "$(dirname "$0")"
known="demo paper precision smoke algorithms sequential bases"
name="${1:-}"
if [ -z "$name" ]; then
  sed -n '2,11p' "$0"; echo "sweeps: $known"; exit 2
fi
shift
RLX_TRAIN="${RLX_TRAIN:-.venv/bin/rlx-train}"      # command lines (may contain spaces)
RLX_COMPARE="${RLX_COMPARE:-.venv/bin/rlx-compare}"
sweep_id="${RLX_SWEEP_ID:-${name}-$(date +%Y%m%d-%H%M%S)}"  # RLX_SWEEP_ID: join runs launched separately
compare=false
group_by=()  # rlx-compare's default grouping: algorithm.name,precision.name
case "$name" in
  demo)
    args=(algorithm=grpo,repo_r,rloo seed=0); compare=true ;;
  paper)
    args=(algorithm=rloo,grpo,loop,dapo,gspo,repo_r,repo_r_published,repo_d,adapo seed=0,1,2); compare=true ;;
  precision)
    args=(algorithm=dapo,grpo,repo_r precision=fp32,bf16,bf16_fp32_logprobs seed=0,1,2); compare=true ;;
  smoke)
    args=(algorithm=grpo,rloo,dapo,repo_r,adapo seed=0,1 trainer.max_steps=5 eval_every=5) ;;
  algorithms)
    args=(algorithm=grpo,rloo,dapo,repo_r,adapo seed=0,1,2) ;;
  bases)
    args=(algorithm=repo_r,repo_d,top_entropy algorithm.base=grpo,dapo,rloo seed=0,1,2); compare=true
    group_by=(--group-by algorithm.name,algorithm.base) ;;
  sequential)
    args=(experiment=sequential algorithm=grpo,dapo,repo_r,adapo,rloo seed=0) ;;
  *)
    echo "multirun.sh: unknown sweep '$name' (known: $known)" >&2; exit 2 ;;
esac

# The comparison reads the same store the jobs wrote to (an override, else the environment/default).
tracking_uri="${MLFLOW_TRACKING_URI:-sqlite:///outputs/mlflow.db}"
for arg in "$@"; do
  case "$arg" in logger.tracking_uri=*) tracking_uri="${arg#logger.tracking_uri=}" ;; esac
done

echo "sweep $sweep_id: ${args[*]} $*"
$RLX_TRAIN --multirun "${args[@]}" "sweep_id=$sweep_id" "$@"
if $compare; then
  $RLX_COMPARE --tracking-uri "$tracking_uri" --sweep-id "$sweep_id" --k 1 4 16 --out "outputs/compare/$sweep_id" \
    ${group_by[@]+"${group_by[@]}"}
fi
if [ "$name" = sequential ]; then  # phase-B trainability per algorithm, from the parent runs
  ${RLX_PYTHON:-.venv/bin/python} -m rlx.sequential --tracking-uri "$tracking_uri" --sweep-id "$sweep_id"
fi
echo "sweep $sweep_id done; compare again: .venv/bin/rlx-compare --tracking-uri $tracking_uri --sweep-id $sweep_id"
