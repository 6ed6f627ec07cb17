"""Summaries of timing samples and memory readings, shared by every benchmark mode."""

import os
import resource
import sys

import numpy as np

#: the statistics reported for every timed stage
STAT_KEYS = ('mean', 'median', 'p90', 'min', 'max', 'std')


def summarize(samples_s) -> dict:
    """Seconds per iteration -> ``{mean, median, p90, min, max, std}`` in milliseconds.

    ``p90`` is numpy's linear-interpolated 90th percentile; ``std`` the population standard
    deviation. An empty sample list is an error: a stage that was never timed has no statistics.
    """
    values = np.asarray(samples_s, np.float64) * 1000.0
    if values.size == 0:
        raise ValueError('no timing samples')
    return dict(
        mean=float(values.mean()),
        median=float(np.median(values)),
        p90=float(np.percentile(values, 90)),
        min=float(values.min()),
        max=float(values.max()),
        std=float(values.std()),
    )


def peak_rss_mb() -> float:
    """High-water mark of this process's resident set (``getrusage(RUSAGE_SELF).ru_maxrss``), MiB.

    Linux reports KiB, macOS bytes.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == 'darwin' else peak / 1024.0


def current_rss_mb() -> float | None:
    """The resident set right now (``/proc/self/statm``), MiB; None where /proc is missing."""
    try:
        with open('/proc/self/statm') as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf('SC_PAGE_SIZE') / (1024.0 * 1024.0)
