"""loldu.methods is a plain library: no training-framework imports."""

from __future__ import annotations

import json
import subprocess
import sys


def test_methods_import_no_training_framework():
    code = (
        "import sys, json, loldu.methods; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'hydra', 'omegaconf', 'wandb'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
