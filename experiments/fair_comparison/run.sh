#!/usr/bin/env bash
# The fair rerun of the method comparison (issue 21): every method of methods.txt on one grid, lr x head_lr, at
# each step budget, the pair chosen jointly on val/acc of seed 0, then seeds 1 and 2 at that pair:
#   experiments/fair_comparison/run.sh rotten_tomatoes short   # 63 steps (1 epoch over 2,000 sentences)
#   experiments/fair_comparison/run.sh rotten_tomatoes long    # 214 steps (1 epoch over all 6,824)
#   experiments/fair_comparison/run.sh tweet_sentiment short   # 63 steps (1 epoch over 2,000 tweets)
#   experiments/fair_comparison/run.sh rotten_tomatoes short vera svfit   # only these (two shells can share)
# One rule for every method: where the chosen lr is the smallest or largest of the grid, the grid grows by one lr
# beyond it (x1/3 or x3, at both head_lrs) before the seeds run. MiniLM; the task's data as
# ../method_comparison/setting.sh (long: the whole training split once; tweets still evaluate on 1,000 + 1,000).
# Runs land in runs/<task>/<budget>/<method>/{grid,extend,seeds}; a folder that exists is skipped, so a killed stage
# resumes (remove its half-written folder first).
set -euo pipefail
task=${1:-} budget=${2:-} only=${*:3}
here=experiments/fair_comparison
source experiments/method_comparison/setting.sh
case $budget in
  short) lrs=1e-3,3e-3,1e-2,3e-2,1e-1 methods="loldu_r384 loldu_r64 lora_r8 bitfit svfit vera fourierft" ;;
  long) common="model=minilm task=$task epochs=1 $evaluation" lrs=1e-3,3e-3,1e-2,3e-2
    methods="loldu_r384 loldu_r64 lora_r8 bitfit svfit vera fourierft" ;;
  *) echo "usage: run.sh <rotten_tomatoes|tweet_sentiment> <short|long> [method ...]" >&2; exit 2 ;;
esac
for name in $only; do
  [[ " $methods " == *" $name "* ]] || { echo "method $name: $budget runs only $methods" >&2; exit 2; }
done
head_lrs=3e-3,3e-2
grep -v '^#' $here/methods.txt | while read -r name overrides; do
  [ -n "$name" ] || continue
  [[ " $methods " == *" $name "* ]] || continue
  [ -z "$only" ] || [[ " $only " == *" $name "* ]] || continue
  out=$here/runs/$task/$budget/$name
  [ -d $out/grid ] || python train.py -m $common $overrides "lr=$lrs" "head_lr=$head_lrs" seed=0 \
    hydra.sweep.dir=$out/grid || echo "$out/grid: some jobs failed (the report lists them)"
  best=$(python -m loldu.report $out/grid --tune lr+head_lr --print-best)  # e.g. 0.003+0.03
  beyond=$(python -c "
lrs, lr = [float(v) for v in '$lrs'.split(',')], float('${best%+*}')
print(f'{lr / 3:.0e}' if lr == min(lrs) else f'{lr * 3:.0e}' if lr == max(lrs) else '')")
  if [ -n "$beyond" ] && [ ! -d $out/extend ]; then
    python train.py -m $common $overrides "lr=$beyond" "head_lr=$head_lrs" seed=0 hydra.sweep.dir=$out/extend \
      || echo "$out/extend: some jobs failed (the report lists them)"
  fi
  [ -d $out/seeds ] && continue
  best=$(python -m loldu.report $out --tune lr+head_lr --print-best)  # over grid and extension, seed 0
  python train.py -m $common $overrides "lr=${best%+*}" "head_lr=${best#*+}" seed=1,2 hydra.sweep.dir=$out/seeds \
    || echo "$out/seeds: some jobs failed (the report lists them)"
done
