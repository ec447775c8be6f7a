#!/usr/bin/env bash
# Regenerate the initialisation ablation's tables and plot from the committed run folders (no training):
# runs/{report.md,report.png}; start_check.md needs the model, not the runs (about a minute).
set -euo pipefail
python -m loldu.report experiments/init_ablation/runs --x init
