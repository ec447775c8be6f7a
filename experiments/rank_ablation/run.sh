#!/usr/bin/env bash
# Rank ablation on MiniLM x Rotten Tomatoes (README.md), in the method comparison's setting (1 epoch over 2,000
# training sentences). LoLDU at ranks 1, 8, 32, 128 and 384 (full), seed 0 at the two best lrs of its grids in the
# method comparison (3e-3 at full rank, 1e-2 at r=64: the best lr moves with the rank, so one lr for all ranks would
# confound the two); the ranks below full, which all chose 1e-2 (the grid's upper edge), also at 3e-2. Then seed 1
# at the lr each rank's seed 0 validated best. LoRA at r=1 (9,216 adapter parameters, the nearest LoRA gets to
# LoLDU at full rank; r=8 is in the method comparison, same setting) at the lr the comparison chose for LoRA r8,
# seeds 0 and 1. Run from the repository root after the comparison's grids.
set -euo pipefail
here=experiments/rank_ablation
grids=experiments/method_comparison/runs/rotten_tomatoes
common="model=minilm task=rotten_tomatoes epochs=1 +task.data.limit_train=2000"
export HF_HUB_OFFLINE=1
[ -d $here/runs/loldu/grid ] || python train.py -m $common method=loldu 'rank=1,8,32,128,${model.full_rank}' \
  lr=3e-3,1e-2 seed=0 hydra.sweep.dir=$here/runs/loldu/grid || echo "some loldu jobs failed (the report lists them)"
[ -d $here/runs/loldu/grid_3e-2 ] || python train.py -m $common method=loldu rank=1,8,32,128 lr=3e-2 seed=0 \
  hydra.sweep.dir=$here/runs/loldu/grid_3e-2 || echo "some loldu jobs failed (the report lists them)"
# "rank=8 0.01" per rank: the choice over every lr seed 0 ran at (seed 1's single lr takes no part in it)
python -m loldu.report $here/runs/loldu --tune lr --print-best | while read -r rank lr; do
  out=$here/runs/loldu/seed1_${rank#rank=}
  if [ -d $out ] && ! grep -qx "lr: $lr" $out/0/config.yaml; then  # the choice moved since: keep only the new lr
    echo "$out: ran at another lr than $lr, the choice now; running again"; rm -r $out
  fi
  [ -d $out ] || python train.py -m $common method=loldu $rank lr=$lr seed=1 hydra.sweep.dir=$out < /dev/null \
    || echo "$rank seed 1 failed"
done
lora_lr=$(python -m loldu.report $grids/lora_r8 --tune lr --print-best)  # the comparison's grid, seed 0, decides
[ -d $here/runs/lora ] || python train.py -m $common method=lora rank=1 lr=$lora_lr seed=0,1 \
  hydra.sweep.dir=$here/runs/lora || echo "some lora jobs failed (the report lists them)"
