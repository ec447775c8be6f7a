"""Peak resident memory of this process on CPU (the kernel's RSS high-water mark).

tracemalloc does not see torch's allocations, so the benchmarks read the RSS
high-water mark (``ru_maxrss``) instead, after resetting it through
``/proc/self/clear_refs`` where Linux allows: the peak of a phase is then
``max_rss()`` after it minus ``current_rss()`` before it. Each configuration
runs in a fresh subprocess so nothing is left over from another one.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

MIB = 1024 * 1024


def current_rss() -> int:
    """Resident set size now, in bytes (the peak so far where /proc is missing)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return max_rss()


def max_rss() -> int:
    """Peak resident set size from ``getrusage``, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark, which ``ru_maxrss`` reads (Linux >= 4.0); True if it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
