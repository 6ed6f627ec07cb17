"""Thread settings that keep PyTorch usable on a shared, busy machine.

PyTorch's OpenMP threads spin-wait for work between parallel regions. On a quiet machine that is
what makes them fast; on a machine with more runnable processes than CPUs the spinning threads
take the cores the work needs, and eager inference was measured 5 to 20 times slower (bundled
Mask R-CNN on 2 cores at load average 9: 2.0-9.2 s per image spinning, 0.42 s passive). Passive
waiting costs a quiet machine about a third (38 -> 58 ms on the bundled RetinaNet), so it is
chosen only when the machine is busy when a tool starts, and never over the user's own setting.
"""

import os


def cpu_count() -> int:
    """CPUs this process may run on."""
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def machine_is_busy() -> bool:
    """The 1-minute load average exceeds the CPUs this process may use."""
    try:
        return os.getloadavg()[0] > cpu_count()
    except OSError:  # no load average on this platform
        return False


def passive_openmp_when_busy(environ=os.environ) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` when the machine is busy and the user set no OpenMP wait
    policy. Must run before ``torch`` is imported (OpenMP reads it once). Returns whether it did."""
    if 'OMP_WAIT_POLICY' in environ or 'GOMP_SPINCOUNT' in environ or not machine_is_busy():
        return False
    environ['OMP_WAIT_POLICY'] = 'PASSIVE'
    return True
