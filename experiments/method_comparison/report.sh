#!/usr/bin/env bash
# Regenerate the method comparison's tables and plots from the committed run folders (no training):
# runs/<task>/{report.md,report.png,report_params.png,tuned.json} and summary.md. Run from the repository root.
set -euo pipefail
here=experiments/method_comparison
for task in rotten_tomatoes tweet_sentiment; do
  [ -d $here/runs/$task ] && python -m loldu.report $here/runs/$task --tune lr --x lr > /dev/null
done
python $here/summary.py $here/runs > $here/summary.md
cat $here/summary.md
