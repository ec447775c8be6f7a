#!/usr/bin/env bash
# z only (the authors' code and the paper's 18k row) against z and sigma (this project's default until this study),
# LoLDU at full rank, in the method comparison's setting (../method_comparison/setting.sh), both arms run now:
#   experiments/sigma_fidelity/run.sh grid  <task>   # both arms at every lr of the grid, seed 0
#   experiments/sigma_fidelity/run.sh seeds <task>   # seeds 1 and 2, each arm at the lr its seed 0 validated
# From the repository root; runs land in experiments/sigma_fidelity/runs/<task>/{grid,seeds_sigma_<arm>}.
set -euo pipefail
stage=$1 task=$2
here=experiments/sigma_fidelity
source experiments/method_comparison/setting.sh
case $task in
  rotten_tomatoes) grid=1e-3,3e-3,1e-2,3e-2 ;;  # the comparison's LoLDU grid
  tweet_sentiment) grid=3e-3,9e-3,2.7e-2 ;;      # its tweet grid (around the Rotten Tomatoes choice)
esac
out=$here/runs/$task
if [ "$stage" = grid ]; then
  python train.py -m $common method=loldu method.options.train_sigma=false,true "lr=$grid" seed=0 \
    hydra.sweep.dir=$out/grid
else
  python -m loldu.report $out --tune lr --print-best | while read -r arm lr; do  # "method.options.train_sigma=X lr"
    python train.py -m $common method=loldu $arm "lr=$lr" seed=1,2 hydra.sweep.dir=$out/seeds_${arm##*=}
  done
fi
