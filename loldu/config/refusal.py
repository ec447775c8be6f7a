"""User mistakes end in one line, not a traceback: :func:`refuse` around the checks of ``train.py`` prints
``error: <what is wrong and the fix>`` and exits with status 2 (``LOLDU_TRACEBACK=1`` shows the traceback).

Only refusals are shortened: everything :func:`loldu.config.check_config` raises before the run, and what the run
skeleton marks with :func:`mark_refusal` (its checks of data, method options, resumption, run folder, all before
any work). An error during training keeps its traceback, and in a multirun a refused job fails as any job does, so
the sweep records it and goes on. Torch-free.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

#: The errors a check raises for a user mistake (a RuntimeError: a run folder another process holds;
#: FileExistsError: a folder that holds another run).
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, RuntimeError)


def mark_refusal(error: BaseException) -> BaseException:
    """Mark ``error`` as a refusal before any work (what :func:`refuse` shortens); returns it."""
    error.loldu_refusal = True  # type: ignore[attr-defined]
    return error


def is_refusal(error: BaseException) -> bool:
    return bool(getattr(error, "loldu_refusal", False))


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


@contextlib.contextmanager
def refuse(marked_only: bool = False) -> Iterator[None]:
    """Turn a user mistake raised in the block into ``error: <message>`` on stderr and exit status 2.

    Args:
        marked_only: shorten only errors marked by :func:`mark_refusal` (around a whole run); others propagate.
    """
    try:
        yield
    except USER_ERRORS as error:
        if (marked_only and not is_refusal(error)) or _in_multirun() or os.environ.get("LOLDU_TRACEBACK"):
            raise
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
        raise SystemExit(2) from None
