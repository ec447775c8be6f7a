#!/usr/bin/env bash
# Instruction tuning of SmolLM2-135M-Instruct on ChatterBot (README.md): LoLDU (full rank 192), LoRA r8 and full
# fine-tuning at matched steps: 1 epoch over the same 240 training pairs (30 steps of 8), validation (token-weighted
# loss, greedy generations) before and after. Run from the repository root.
set -euo pipefail
here=experiments/instruction_tuning
common="model=smollm2 task=chatterbot epochs=1 +task.data.limit_train=240 task.generation.num_prompts=4 seed=0"
export HF_HUB_OFFLINE=1
run() {  # name, overrides...
  local name=$1; shift
  [ -d $here/runs/$name ] || python train.py $common "$@" hydra.run.dir=$here/runs/$name \
    || echo "$name failed (the report lists it)"
}
run loldu method=loldu lr=3e-3
run lora_r8 method=lora rank=8 lr=1e-3
run full method=full lr=2e-5
python $here/side_by_side.py $here/runs > $here/generations.md
