#!/usr/bin/env bash
# PEFT's other tuners and MELoRA in the method comparison's setting (../method_comparison/setting.sh), Rotten
# Tomatoes, every method on the same lr grid as LoLDU and LoRA r8 there (1e-3, 3e-3, 1e-2, 3e-2):
#   experiments/peft_baselines/run.sh grid    # every method of methods.txt at every lr of the grid, seed 0
#   experiments/peft_baselines/run.sh extend  # one more lr (x1/3 or x3) at seed 0 where validation chose an edge
#   experiments/peft_baselines/run.sh seeds   # seeds 1 and 2 at the lr validation chose (over grid and extension)
# From the repository root; runs land in experiments/peft_baselines/runs/<method>/{grid,extend,seeds}. A method
# folder that exists is skipped, so a killed stage resumes where it stopped (remove a half-written folder first).
set -euo pipefail
stage=$1 task=rotten_tomatoes
here=experiments/peft_baselines
source experiments/method_comparison/setting.sh
grid=1e-3,3e-3,1e-2,3e-2
grep -v '^#' $here/methods.txt | while read -r name overrides; do
  [ -n "$name" ] || continue
  out=$here/runs/$name
  [ -d "$out/$stage" ] && { echo "skip $out/$stage (exists)"; continue; }
  case $stage in
    grid) lrs=$grid seeds=0 ;;
    extend)
      best=$(python -m loldu.report $out --tune lr --print-best)
      lrs=$(python -c "b = float('$best'); print({1e-3: '3e-4', 3e-2: '1e-1'}.get(b, ''))")
      [ -n "$lrs" ] || { echo "$name: validation chose $best, inside the grid"; continue; }
      seeds=0 ;;
    seeds) lrs=$(python -m loldu.report $out --tune lr --print-best) seeds=1,2 ;;
    *) echo "stage: grid, extend or seeds" >&2; exit 2 ;;
  esac
  python train.py -m $common $overrides "lr=$lrs" seed=$seeds hydra.sweep.dir=$out/$stage \
    || echo "$out/$stage: some jobs failed (the report lists them; tuning uses the finished ones)"
done
