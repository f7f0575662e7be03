#!/usr/bin/env bash
# Named sweeps through Hydra --multirun; every job is its own MLflow run tagged with the sweep id.
#   ./multirun.sh <name> [extra Hydra overrides]
#   ./multirun.sh demo        # grpo vs repo_r vs rloo, one seed, then the comparison table (< 10 min)
#   ./multirun.sh paper       # {rloo,grpo,loop,dapo,gspo,repo_r,repo_r_published,repo_d,adapo} x 3 seeds, then compare
#   ./multirun.sh precision   # {dapo,grpo,repo_r} x {fp32,bf16_true_logp_bf16_old_trainer,bf16_true_logp_fp32_old_trainer} x 3 seeds, then compare
#   ./multirun.sh smoke       # 5 algorithms x 2 seeds, 5 iterations each
#   ./multirun.sh sequential  # {grpo,dapo,repo_r,adapo,rloo}: task A, then task B from A's checkpoint; trainability table
#   ./multirun.sh bases       # {repo_r,repo_d,top_entropy} on each base {grpo,dapo,rloo} (algorithm.base) x 3 seeds, then compare
#   ./multirun.sh off_policy      # {grpo,dapo,adapo,repo_r} x 5 seeds, 4 epochs x 8 minibatches per rollout (clip binds), then compare
#   ./multirun.sh random_reward   # the same under a Bernoulli(0.5) reward independent of the answer, then compare
#   ./multirun.sh hard_heldout    # the same on a hard held-out split (20 targets, 64 samples each), compare at k=1,8,64
#   ./multirun.sh sequential_lost # phase B on phase A's prompts rewarding answers outside the favourites; trainability table
#   ./multirun.sh algorithms trainer.max_steps=100
#   Parallel jobs on one machine: append hydra/launcher=local_parallel trainer.num_threads=1
# Compare any finished sweep:  .venv/bin/rlx-compare --sweep-id <the printed id>
set -euo pipefail
cd "$(dirname "$0")"
known="demo paper precision smoke algorithms sequential bases off_policy random_reward hard_heldout sequential_lost"
name="${1:-}"
if [ -z "$name" ]; then
  sed -n '2,16p' "$0"; echo "sweeps: $known"; exit 2
fi
shift
RLX_TRAIN="${RLX_TRAIN:-.venv/bin/rlx-train}"      # command lines (may contain spaces)
RLX_COMPARE="${RLX_COMPARE:-.venv/bin/rlx-compare}"
sweep_id="${RLX_SWEEP_ID:-${name}-$(date +%Y%m%d-%H%M%S)}"  # RLX_SWEEP_ID: join runs launched separately
compare=false
group_by=()  # rlx-compare's default grouping: algorithm.name,precision.name
ks=(1 4 16)   # rlx-compare's pass@k columns
regime_algorithms=grpo,dapo,adapo,repo_r   # the regimes where clipping (DAPO, ADAPO) and REPO act
regime_seeds=0,1,2,3,4
case "$name" in
  demo)
    args=(algorithm=grpo,repo_r,rloo seed=0); compare=true ;;
  paper)
    args=(algorithm=rloo,grpo,loop,dapo,gspo,repo_r,repo_r_published,repo_d,adapo seed=0,1,2); compare=true ;;
  precision)
    args=(algorithm=dapo,grpo,repo_r precision=fp32,bf16_true_logp_bf16_old_trainer,bf16_true_logp_fp32_old_trainer seed=0,1,2); compare=true ;;
  smoke)
    args=(algorithm=grpo,rloo,dapo,repo_r,adapo seed=0,1 trainer.max_steps=5 eval_every=5) ;;
  algorithms)
    args=(algorithm=grpo,rloo,dapo,repo_r,adapo seed=0,1,2) ;;
  bases)
    args=(algorithm=repo_r,repo_d,top_entropy algorithm.base=grpo,dapo,rloo seed=0,1,2); compare=true
    group_by=(--group-by algorithm.name,algorithm.base) ;;
  sequential)
    args=(experiment=sequential algorithm=grpo,dapo,repo_r,adapo,rloo seed=0) ;;
  off_policy|random_reward)
    args=(experiment=$name algorithm=$regime_algorithms seed=$regime_seeds); compare=true ;;
  hard_heldout)
    args=(experiment=$name algorithm=$regime_algorithms seed=$regime_seeds); compare=true; ks=(1 8 64) ;;
  sequential_lost)
    args=(experiment=$name algorithm=$regime_algorithms seed=$regime_seeds) ;;
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
  $RLX_COMPARE --tracking-uri "$tracking_uri" --sweep-id "$sweep_id" --k "${ks[@]}" --out "outputs/compare/$sweep_id" \
    ${group_by[@]+"${group_by[@]}"}
fi
if [ "$name" = sequential ] || [ "$name" = sequential_lost ]; then  # phase-B trainability per algorithm, from the parent runs
  ${RLX_PYTHON:-.venv/bin/python} -m rlx.sequential --tracking-uri "$tracking_uri" --sweep-id "$sweep_id" --experiment "$name"
fi
echo "sweep $sweep_id done; compare again: .venv/bin/rlx-compare --tracking-uri $tracking_uri --sweep-id $sweep_id"
