"""Many runs: the multirun callback that checks a sweep before its jobs (:class:`SweepCallback`), and the report of
a sweep's run folders (:mod:`.report`: tables, seed aggregation and plots, tuning on validation).

Torch-free: Hydra imports :class:`SweepCallback` in the launching process (``conf/hydra/default.yaml``).
"""

from loldu.sweeps.callback import SweepCallback, check_ranks, report_command, swept_values

__all__ = ["SweepCallback", "check_ranks", "report_command", "swept_values"]
