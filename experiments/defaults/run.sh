#!/usr/bin/env bash
# A new user's first runs on their own small CSV (README.md): 751 texts, 21 topics (make_topics_csv.py), MiniLM,
# nothing set but the method (LoRA: rank 8), so every lr and epoch count is the project's default; 3 seeds.
# LoLDU also at epochs=10, to see whether the default epoch count is what holds a small-data run back.
# Run from the repository root.
set -euo pipefail
here=experiments/defaults
export HF_HUB_OFFLINE=1
python $here/make_topics_csv.py $here/topics.csv
data="task=text_csv task.data.source_args.train=$here/topics.csv task.data.source_args.label_column=topic seed=0,1,2"
[ -d $here/runs/loldu ] || python train.py -m $data method=loldu hydra.sweep.dir=$here/runs/loldu || true
[ -d $here/runs/lora_r8 ] || python train.py -m $data method=lora rank=8 hydra.sweep.dir=$here/runs/lora_r8 || true
[ -d $here/runs/loldu_e10 ] || python train.py -m $data method=loldu epochs=10 hydra.sweep.dir=$here/runs/loldu_e10 \
  || true
