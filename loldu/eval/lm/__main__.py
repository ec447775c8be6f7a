"""``python -m loldu.eval.lm RUN_DIR``: lm-evaluation-harness benchmarks of a finished run."""

from loldu.eval.lm.cli import main

try:
    main()
except (FileNotFoundError, ValueError) as err:
    raise SystemExit(f"error: {err}") from None
