"""How many CPU threads a run's torch ops use."""

from __future__ import annotations

import os
import time

import torch

from gantool.runtime.device import SMALL_MODEL

TORCH_THREADS = torch.get_num_threads()  # torch's own choice (OMP_NUM_THREADS, or the cores)
SAMPLE_SECONDS = 0.1  # how long busy_cores watches the machine


def cpu_threads(requested: int, num_parameters: int) -> int:
    """device.num_threads, or for 0 (auto): one thread for a small model (G and D together
    under SMALL_MODEL parameters), whose ops are too small to share out; for a larger one,
    torch's own choice less the cores that other processes keep busy right now.

    Measured on a 2-core machine (docs/speed.md): with both cores free, 2 threads ran the
    MNIST default 1.2-1.7x as fast as 1; with one core busy, 2 threads ran it at a third of
    1 thread's speed, because threads that wait on a busy core wait on each other too. The
    cores are counted busy from the machine's CPU time over SAMPLE_SECONDS at start (the
    1-minute load average counted a run that had just ended, a sequential sweep's previous
    job, as busy for a minute). A parallel sweep's joblib workers get OMP_NUM_THREADS =
    cores / jobs from joblib, which torch's own choice follows.
    """
    if requested > 0:
        return requested
    if num_parameters < SMALL_MODEL:
        return 1
    cores = os.cpu_count() or 1
    return max(1, min(TORCH_THREADS, cores - busy_cores(cores)))


def busy_cores(cores: int) -> int:
    """How many cores other processes keep busy, from /proc/stat over SAMPLE_SECONDS (this
    process sleeps meanwhile); 0 where it cannot be told."""
    first = _cpu_times()
    if first is None:
        return 0
    time.sleep(SAMPLE_SECONDS)
    second = _cpu_times()
    if second is None:
        return 0
    busy, total = second[0] - first[0], second[1] - first[1]
    return round(cores * busy / total) if total > 0 else 0


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores since boot: /proc/stat's first line."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guests are in user)
    return total - idle, total
