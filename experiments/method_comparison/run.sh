#!/usr/bin/env bash
# The method comparison, stage by stage, through train.py multiruns (see README.md):
#   experiments/method_comparison/run.sh grid  <task>   # every method at every lr of its grid, seed 0
#       (rotten_tomatoes: the grids of methods.txt; tweet_sentiment: 3 lrs centred on the Rotten Tomatoes choice,
#        x1/3, x1, x3: a small grid where the first task says the optimum is)
#   experiments/method_comparison/run.sh seeds <task>   # seeds 1 and 2 at the lr chosen on val/acc of seed 0
#   experiments/method_comparison/run.sh extend <task> <method> <lrs>  # more lrs at seed 0, before `seeds`, for a
#                                                       # method whose choice fell on the edge of its grid
# Run from the repository root; runs land in experiments/method_comparison/runs/<task>/<method>/{grid,seeds}.
set -euo pipefail
stage=$1 task=$2
here=experiments/method_comparison
source $here/setting.sh
if [ "$stage" = extend ]; then
  name=$3 lrs=$4
  overrides=$(grep "^$name " $here/methods.txt | awk '{$1=""; $NF=""; print}')
  python train.py -m $common $overrides "lr=$lrs" seed=0 hydra.sweep.dir=$here/runs/$task/$name/grid_$lrs
  exit
fi
grep -v '^#' $here/methods.txt | while read -r name rest; do
  [ -n "$name" ] || continue
  grid=${rest##* }
  overrides=${rest% *}
  out=$here/runs/$task/$name
  if [ "$stage" = grid ]; then
    [ -d "$out/grid" ] && { echo "skip $out/grid (exists)"; continue; }
    if [ "$task" != rotten_tomatoes ]; then
      best=$(python -m loldu.report $here/runs/rotten_tomatoes/$name --tune lr --print-best)
      grid=$(python -c "b = float('$best'); print(','.join(f'{v:.3g}' for v in (b / 3, b, b * 3)))")
    fi
    python train.py -m $common $overrides "lr=$grid" seed=0 hydra.sweep.dir=$out/grid \
      || echo "$out/grid: some jobs failed (the report lists them; tuning uses the finished ones)"
  else
    [ -d "$out/seeds" ] && { echo "skip $out/seeds (exists)"; continue; }
    lr=$(python -m loldu.report "$out" --tune lr --print-best)  # over grid and any extension, seed 0
    python train.py -m $common $overrides "lr=$lr" seed=1,2 hydra.sweep.dir=$out/seeds \
      || echo "$out/seeds: some jobs failed (the report lists them)"
  fi
done
