#!/usr/bin/env bash
# A new user's first runs on their own small CSV (README.md): 751 texts, 21 topics (make_topics_csv.py), MiniLM,
# nothing set but the method (LoRA: rank 8), so every lr and epoch count is the project's default; 3 seeds.
# Then the same with epochs=10: does the default epoch count (3: 57 steps on 600 training rows) hold them back?
# Run from the repository root.
set -euo pipefail
here=experiments/defaults
export HF_HUB_OFFLINE=1
python $here/make_topics_csv.py $here/topics.csv
data="task=text_csv task.data.source_args.train=$here/topics.csv task.data.source_args.label_column=topic seed=0,1,2"
# These two ran when 3 was the default for every task (text_csv now defaults to 10, from what they showed).
[ -d $here/runs/loldu ] || python train.py -m $data method=loldu epochs=3 hydra.sweep.dir=$here/runs/loldu || true
[ -d $here/runs/lora_r8 ] || python train.py -m $data method=lora rank=8 epochs=3 hydra.sweep.dir=$here/runs/lora_r8 \
  || true
for m in loldu lora_r8; do
  overrides="method=${m%_r8}"; [ $m = lora_r8 ] && overrides="method=lora rank=8"
  [ -d $here/runs/${m}_epochs10 ] || python train.py -m $data $overrides epochs=10 \
    hydra.sweep.dir=$here/runs/${m}_epochs10 || true
done
# Is the default lr near the best one for this data? Each method also at its neighbour on the comparison's grid
# (LoLDU 1e-2, LoRA 3e-3: the lr the first LoRA run used), 10 epochs, the same 3 seeds.
[ -d $here/runs/loldu_epochs10_lr1e-2 ] || python train.py -m $data method=loldu epochs=10 lr=1e-2 \
  hydra.sweep.dir=$here/runs/loldu_epochs10_lr1e-2 || true
[ -d $here/runs/lora_r8_epochs10_lr3e-3 ] || python train.py -m $data method=lora rank=8 epochs=10 lr=3e-3 \
  hydra.sweep.dir=$here/runs/lora_r8_epochs10_lr3e-3 || true
