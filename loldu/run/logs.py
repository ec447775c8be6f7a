"""Console and log file in one place: :func:`quiet` (called once by the run skeleton and the command-line tools)
routes the project's messages through :mod:`logging` and drops the third-party warnings checked to be harmless (the
progress bar of long steps is :func:`loldu.methods.progress.progress`).

Under ``python train.py`` Hydra's job logging (``conf/hydra/job_logging/loldu.yaml``) sends every ``loldu.*``
INFO message to the console and to the run's ``train.log``. Anywhere else (a notebook, a CLI) :func:`quiet` gives the
``loldu`` logger a plain console handler, so the same messages still show.
"""

from __future__ import annotations

import logging
import sys
import warnings

log = logging.getLogger(__name__)

# Third-party warnings seen on the tiny run of each task family, each checked harmless for this project:
# (message regex, category, module regex of where the warning is attributed, why it is harmless).
HARMLESS_WARNINGS = (
    (
        r"`is_gradient_checkpointing` is deprecated",
        FutureWarning,
        r"transformers\.modeling_utils",
        "PEFT's get_peft_model reads the old property name; only the name is deprecated, the value is the same",
    ),
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        r"lightning\.pytorch\.utilities\._pytree",
        "Lightning's batch flattening uses torch's old LeafSpec check; the check still answers correctly",
    ),
    (
        r"Metric `SpearmanCorrcoef` will save all targets and predictions in the buffer",
        UserWarning,
        r"torchmetrics\.utilities\.prints",
        "the regression tasks' eval sets are small (thousands of floats): the buffer is a few KiB",
    ),
)

# Log records dropped by message prefix: advertisements, not information about the run.
DROPPED_MESSAGES = ("💡 Tip: ",)


class ConsoleFormatter(logging.Formatter):
    """Plain lines for INFO and below, ``LEVEL: message`` for warnings and errors (the console of a run)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname}: {text}"


class _DropMessages(logging.Filter):
    """Drops records whose message starts with one of :data:`DROPPED_MESSAGES`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(DROPPED_MESSAGES)


_DROP = _DropMessages()


def quiet() -> None:
    """Set up the console and the log file once per process (calling it again changes nothing).

    * ``loldu.*`` INFO messages reach the root logger's handlers (Hydra: console and ``train.log``); without
      any root handler (a notebook, a CLI) the ``loldu`` logger gets its own console handler.
    * Lightning's own console handler is removed where a root handler exists, so its lines show once (they
      also reach ``train.log`` through the root logger).
    * The warnings of :data:`HARMLESS_WARNINGS` and the log lines of :data:`DROPPED_MESSAGES` are dropped;
      everything else shows as before, and where the root logger writes a file (a run's ``train.log``) the
      remaining warnings go through logging, so the file records them too.
    """
    root = logging.getLogger()
    project = logging.getLogger("loldu")
    if project.level == logging.NOTSET or project.level > logging.INFO:
        project.setLevel(logging.INFO)
    if root.handlers:
        lightning = logging.getLogger("lightning")
        for handler in list(lightning.handlers):
            if type(handler) is logging.StreamHandler:  # Lightning's own console handler, added on import
                lightning.removeHandler(handler)
    elif not project.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        project.addHandler(handler)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        target = logging.getLogger(name)
        if _DROP not in target.filters:
            target.addFilter(_DROP)
    if any(type(h) is logging.FileHandler for h in root.handlers):  # a run's train.log (Hydra's job logging)
        logging.captureWarnings(True)  # the warnings that remain show on the console and land in train.log too
    for message, category, module, _why in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
