#!/usr/bin/env bash
# Does LoLDU's gap shrink with more training? LoLDU at full rank against LoRA r8 on 1 epoch over all 6,824 training
# sentences (214 steps of 32, 3.4x the comparison's 63), each at the lr the comparison chose on validation (their
# defaults: LoLDU 3e-3, LoRA 1e-2; not re-tuned at this budget), seeds 0, 1, 2. Runs land in runs_longer/<method>/.
#   experiments/method_comparison/run_longer.sh        (from the repository root; about 20 min on 2 CPU cores)
set -euo pipefail
here=experiments/method_comparison
common="model=minilm task=rotten_tomatoes epochs=1 seed=0,1,2"
export HF_HUB_OFFLINE=1
[ -d $here/runs_longer/loldu_r384 ] || python train.py -m $common method=loldu lr=3e-3 \
  hydra.sweep.dir=$here/runs_longer/loldu_r384 || echo "some loldu jobs failed (the report lists them)"
[ -d $here/runs_longer/lora_r8 ] || python train.py -m $common method=lora rank=8 lr=1e-2 \
  hydra.sweep.dir=$here/runs_longer/lora_r8 || echo "some lora jobs failed (the report lists them)"
