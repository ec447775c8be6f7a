#!/usr/bin/env bash
# Regenerate the sigma study's tables from its committed run folders (no training): runs/<task>/report.md (every
# run, the lr choice per arm), report.csv and tuned.json; then summary.md. From the repository root.
set -euo pipefail
here=experiments/sigma_fidelity
for task in $here/runs/*/; do
  python -m loldu.report $task --tune lr > /dev/null
done
python $here/summary.py $here/runs > $here/summary.md
cat $here/summary.md
