"""How many CPU threads a run's torch ops use."""

from __future__ import annotations

import os

import torch

from gantool.runtime.device import SMALL_MODEL

TORCH_THREADS = torch.get_num_threads()  # torch's own choice (OMP_NUM_THREADS, or the cores)


def cpu_threads(requested: int, num_parameters: int) -> int:
    """device.num_threads, or for 0 (auto): one thread for a small model (G and D together
    under SMALL_MODEL parameters); for a larger one, torch's own choice less the cores other
    processes keep busy (the 1-minute load average).

    Measured on a shared 2-core machine (MNIST default, 60 steps): 2 threads took 3-24 times
    as long as 1 whenever other work was running, because threads that wait on a busy core
    wait on each other too. On an idle machine more threads help, at most by the core count.
    """
    if requested > 0:
        return requested
    if num_parameters < SMALL_MODEL:
        return 1
    try:
        busy = round(os.getloadavg()[0])
    except OSError:  # not on this platform
        busy = 0
    return max(1, min(TORCH_THREADS, (os.cpu_count() or 1) - busy))
