#!/usr/bin/env bash
# Regenerate the instruction-tuning tables from the committed run folders (no training):
# runs/report.md (held-out loss before and after) and generations.md (side by side).
set -euo pipefail
here=experiments/instruction_tuning
python -m loldu.report $here/runs --x method
python $here/side_by_side.py $here/runs > $here/generations.md
