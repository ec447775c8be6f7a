#!/usr/bin/env bash
# The method comparison, stage by stage, through train.py multiruns (see README.md):
#   experiments/method_comparison/run.sh grid  <task>   # every method at every lr of its grid, seed 0
#   experiments/method_comparison/run.sh seeds <task>   # seeds 1 and 2 at the lr chosen on val/acc of seed 0
# Run from the repository root; runs land in experiments/method_comparison/runs/<task>/<method>/{grid,seeds}.
set -euo pipefail
stage=$1 task=$2
here=experiments/method_comparison
case $task in
  rotten_tomatoes) data="+task.data.limit_train=2000" ;;
  tweet_sentiment) data="+task.data.limit_train=2000 +task.data.limit_eval=1000" ;;
  *) echo "task: rotten_tomatoes or tweet_sentiment" >&2; exit 2 ;;
esac
common="model=minilm task=$task epochs=1 $data"
export HF_HUB_OFFLINE=1
grep -v '^#' $here/methods.txt | while read -r name rest; do
  [ -n "$name" ] || continue
  grid=${rest##* }
  overrides=${rest% *}
  out=$here/runs/$task/$name
  if [ "$stage" = grid ]; then
    [ -d "$out/grid" ] && { echo "skip $out/grid (exists)"; continue; }
    python train.py -m $common $overrides "lr=$grid" seed=0 hydra.sweep.dir=$out/grid \
      || echo "$out/grid: some jobs failed (the report lists them; tuning uses the finished ones)"
  else
    [ -d "$out/seeds" ] && { echo "skip $out/seeds (exists)"; continue; }
    lr=$(python -m loldu.report "$out/grid" --tune lr --print-best)
    python train.py -m $common $overrides "lr=$lr" seed=1,2 hydra.sweep.dir=$out/seeds \
      || echo "$out/seeds: some jobs failed (the report lists them)"
  fi
done
