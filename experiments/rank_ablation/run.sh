#!/usr/bin/env bash
# Rank ablation on MiniLM x Rotten Tomatoes (README.md), in the method comparison's setting (1 epoch over 2,000
# training sentences), each method at the lr the comparison chose for it on validation. Run from the repository
# root after `experiments/method_comparison/run.sh grid rotten_tomatoes`.
set -euo pipefail
here=experiments/rank_ablation
grids=experiments/method_comparison/runs/rotten_tomatoes
common="model=minilm task=rotten_tomatoes epochs=1 +task.data.limit_train=2000 seed=0,1"
export HF_HUB_OFFLINE=1
loldu_lr=$(python -m loldu.report $grids/loldu_r384/grid --tune lr --print-best)
lora_lr=$(python -m loldu.report $grids/lora_r8/grid --tune lr --print-best)
[ -d $here/runs/loldu ] || python train.py -m $common method=loldu 'rank=1,8,32,128,${model.full_rank}' \
  lr=$loldu_lr hydra.sweep.dir=$here/runs/loldu || echo "some loldu jobs failed (the report lists them)"
[ -d $here/runs/lora ] || python train.py -m $common method=lora rank=1,8 lr=$lora_lr \
  hydra.sweep.dir=$here/runs/lora || echo "some lora jobs failed (the report lists them)"
