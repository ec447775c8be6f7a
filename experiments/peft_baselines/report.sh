#!/usr/bin/env bash
# Regenerate the PEFT-baselines study's tables from the committed run folders (no training): per method
# runs/<method>/{report.md,report.csv,report.png,tuned.json} (every run, the lr choice and its grid), then summary.md
# (with LoRA r8 and LoLDU read from ../method_comparison and ../sigma_fidelity). From the repository root.
set -euo pipefail
here=experiments/peft_baselines
for method in $here/runs/*/; do
  python -m loldu.report $method --tune lr > /dev/null
done
python $here/summary.py > $here/summary.md
cat $here/summary.md
