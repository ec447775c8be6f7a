#!/usr/bin/env bash
# Regenerate the method comparison's tables and plots from the committed run folders (no training). Per method:
# runs/<task>/<method>/{report.md,report.png,tuned.json} (every run, the lr choice and its grid, test acc against
# lr); then summary.md and figure1_<task>.png (test accuracy against trainable parameters); then
# runs_longer/report.md; then page/ (every method of both tasks merged, at the lr validation chose: report.csv and the
# self-contained page report.html, not committed; screenshots.py photographs it) and runs/dashboard.json (the W&B
# saved view of the runs). From the repository root.
set -euo pipefail
here=experiments/method_comparison
for method in $here/runs/*/*/; do
  key=lr; [ "$(basename $method)" = loldu_r384_head ] && key=head_lr
  python -m loldu.report $method --tune $key > /dev/null
done
python $here/summary.py $here/runs --figures > $here/summary.md
python -m loldu.report $here/runs_longer --tune lr > /dev/null  # LoLDU and LoRA r8 at 3.4x the steps
python -m loldu.report $here/runs/*/* --tune lr,head_lr --html --out $here/page > /dev/null
python -m loldu.sweeps.dashboard $here/runs > /dev/null  # runs/dashboard.json: the W&B view (python -m ... --push)
cat $here/summary.md
