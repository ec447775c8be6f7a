#!/usr/bin/env bash
# Regenerate the fair comparison's tables from the committed run folders (no training): per budget and method
# runs/<task>/<budget>/<method>/{report.md,report.csv,report.png,tuned.json} (every run, the joint lr x head_lr choice and
# its grid), then summary.md. From the repository root.
set -euo pipefail
here=experiments/fair_comparison
for method in $here/runs/*/*/*/; do
  python -m loldu.report $method --tune lr+head_lr > /dev/null
done
python $here/summary.py > $here/summary.md
cat $here/summary.md
