#!/usr/bin/env bash
# Does LoLDU's gap shrink with more training? LoLDU at full rank against LoRA r8 on 1 epoch over all 6,824 training
# sentences (214 steps of 32, 3.4x the comparison's 63), the comparison's protocol again:
#   LoLDU: seed 0 at 3e-3 (its validated lr, the default) and 1e-2 (the lr tweets, the small CSV of
#          experiments/defaults and the ranks below full chose), then seeds 1 and 2 at the lr validation chooses;
#   LoRA r8: seeds 0, 1, 2 at 1e-2, its validated lr on both tasks (not re-tuned: LoLDU gets two lrs, LoRA one).
# Runs land in runs_longer/<method>/. From the repository root; about 30 min on 2 CPU cores.
set -euo pipefail
here=experiments/method_comparison
common="model=minilm task=rotten_tomatoes epochs=1"
export HF_HUB_OFFLINE=1
out=$here/runs_longer/loldu_r384
[ -d $out ] || python train.py -m $common method=loldu lr=3e-3,1e-2 seed=0 hydra.sweep.dir=$out \
  || echo "some loldu jobs failed (the report lists them)"
lr=$(python -m loldu.report $out --tune lr --print-best)
[ -d $out/seeds ] || python train.py -m $common method=loldu lr=$lr seed=1,2 hydra.sweep.dir=$out/seeds \
  || echo "some loldu jobs failed (the report lists them)"
[ -d $here/runs_longer/lora_r8 ] || python train.py -m $common method=lora rank=8 lr=1e-2 seed=0,1,2 \
  hydra.sweep.dir=$here/runs_longer/lora_r8 || echo "some lora jobs failed (the report lists them)"
