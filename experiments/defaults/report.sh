#!/usr/bin/env bash
# Regenerate the first-run table from the committed run folders (no training): runs/report.md, report.png.
set -euo pipefail
python -m loldu.report experiments/defaults/runs --x method
