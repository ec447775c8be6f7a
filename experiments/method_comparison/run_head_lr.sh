#!/usr/bin/env bash
# LoLDU at full rank with the new classifier head at its own lr (head_lr), after `run.sh grid <task>`:
#   experiments/method_comparison/run_head_lr.sh <task>
# LoLDU's adapter keeps the lr its grid chose; head_lr in lr x {1, 3.33, 10} at seed 0 (the first repeats the
# grid's run; Rotten Tomatoes: 3e-3, 1e-2, 3e-2), then seeds 1 and 2 at the head_lr chosen on val/acc. Runs land in runs/<task>/loldu_r384_head/.
set -euo pipefail
task=$1
here=experiments/method_comparison
source $here/setting.sh
common="$common method=loldu"
out=$here/runs/$task/loldu_r384_head
lr=$(python -m loldu.report $here/runs/$task/loldu_r384 --tune lr --print-best)
grid=$(python -c "b = float('$lr'); print(','.join(f'{v:.3g}' for v in (b, b * 10 / 3, b * 10)))")
[ -d $out/grid ] || python train.py -m $common lr=$lr "head_lr=$grid" seed=0 hydra.sweep.dir=$out/grid \
  || echo "$out/grid: some jobs failed (the report lists them)"
head_lr=$(python -m loldu.report $out/grid --tune head_lr --print-best)
[ -d $out/seeds ] || python train.py -m $common lr=$lr head_lr=$head_lr seed=1,2 hydra.sweep.dir=$out/seeds \
  || echo "$out/seeds: some jobs failed (the report lists them)"
