"""``python -m loldu.eval.concept``: concept-learning scores of a folder of generated images."""

import sys

from loldu.eval.concept.scores import main

try:
    main()
except (ValueError, FileNotFoundError, RuntimeError) as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
