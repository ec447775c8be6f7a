#!/usr/bin/env bash
# Initialisation ablation of LoLDU (full rank) on MiniLM x Rotten Tomatoes (README.md): the eight inits of z, with
# the project's additive residual (init_residual=z0, every init starts at the pre-trained model) and the authors'
# (init_residual=d), 2 seeds, at the lr the method comparison chose for LoLDU on validation; 1 epoch over 1,000
# training sentences (half the comparison's, for time: 32 runs). Run from the repository root after
# `experiments/method_comparison/run.sh grid rotten_tomatoes`.
set -euo pipefail
here=experiments/init_ablation
export HF_HUB_OFFLINE=1
lr=$(python -m loldu.report experiments/method_comparison/runs/rotten_tomatoes/loldu_r384 --tune lr --print-best)
[ -d $here/runs ] || python train.py -m model=minilm task=rotten_tomatoes epochs=1 +task.data.limit_train=1000 \
  method=loldu lr=$lr init=lu,uniform,normal,constant,ones,zeros,s_uniform,s_normal \
  method.options.init_residual=z0,d seed=0,1 hydra.sweep.dir=$here/runs || echo "some jobs failed (the report lists them)"
python $here/start_check.py > $here/start_check.md
