"""The one timing helper of the benchmarks: wall and CPU seconds of a call.

CPU seconds are ``time.process_time``: every thread of this process, so a
call that keeps four cores busy for one second counts four. The benchmarks are
scripts (``python benchmarks/x.py``), so Python puts this folder on
``sys.path`` and they import this file as ``_timing``; a script that a test
loads by its path puts the folder there itself.
"""

import time


def timed(function):
    """Calls ``function()`` once; returns (wall seconds, CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu
