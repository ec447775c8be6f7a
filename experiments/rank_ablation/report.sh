#!/usr/bin/env bash
# Regenerate the rank ablation's tables and plot from the committed run folders (no training):
# runs/{report.md,report.png,report_params.png,tuned.json}, each rank at the lr its seed 0 validated best.
# Run from the repository root.
set -euo pipefail
python -m loldu.report experiments/rank_ablation/runs --tune lr
