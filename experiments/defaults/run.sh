#!/usr/bin/env bash
# A new user's first runs on their own small CSV (README.md): 751 texts, 21 topics (make_topics_csv.py), MiniLM,
# nothing set but the method (LoRA: rank 8), so every lr is the project's default; 3 seeds. First at 3 epochs (the
# default for every task when these ran; text_csv now defaults to 10, from what they showed), then at 10; then each
# method at its neighbour on the comparison's lr grid (LoLDU 1e-2, LoRA 3e-3: the lr the first LoRA run
# used), 10 epochs. Run from the repository root.
set -euo pipefail
here=experiments/defaults
export HF_HUB_OFFLINE=1
python $here/make_topics_csv.py $here/topics.csv
data="task=text_csv task.data.source_args.train=$here/topics.csv task.data.source_args.label_column=topic seed=0,1,2"
run() {  # folder under runs/, overrides...
  local name=$1; shift
  [ -d $here/runs/$name ] || python train.py -m $data "$@" hydra.sweep.dir=$here/runs/$name || true
}
run loldu method=loldu epochs=3
run lora_r8 method=lora rank=8 epochs=3
run loldu_epochs10 method=loldu epochs=10
run lora_r8_epochs10 method=lora rank=8 epochs=10
run loldu_epochs10_lr1e-2 method=loldu epochs=10 lr=1e-2
run lora_r8_epochs10_lr3e-3 method=lora rank=8 epochs=10 lr=3e-3
