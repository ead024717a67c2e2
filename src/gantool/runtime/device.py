"""Pick the torch device named by the `device` config."""

from __future__ import annotations

import logging
import os

import torch

from gantool.core.errors import ConfigError

log = logging.getLogger(__name__)

# Below this many parameters in G and D, a model's ops are too small to share out: one CPU
# thread beats several (trainer.cpu_threads), and device=auto keeps an uncaptured step off
# the GPU (auto_device).
SMALL_MODEL = 100_000


def resolve_device(name: str) -> torch.device:
    """auto: CUDA, then MPS, then CPU. A named device that is missing is a ConfigError."""
    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ConfigError(f"device={name}: not available on this machine; use device=auto or cpu")
    return torch.device(name)


def free_memory(device: torch.device) -> int | None:
    """Bytes free for a run on `device`: the kernel's MemAvailable for the CPU, the driver's
    free memory for CUDA; None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def auto_device(device: torch.device, num_parameters: int, captured: bool) -> torch.device:
    """What device=auto trains on, once the model's size is known: the CPU instead of an
    accelerator for a small model whose step would run eagerly there.

    Eagerly, a small model's step is dozens of tiny kernels, each waiting on its launch: the
    Gaussian default ran at 131-152 steps/s on an H100 against 230-290 on 2 CPU cores (issue
    11's measurement). Captured as one CUDA graph (`captured`) the GPU is kept: one launch per
    step (how fast that is for these models is unmeasured here). One log line says so.
    """
    if device.type == "cpu" or captured or num_parameters >= SMALL_MODEL:
        return device
    log.info(
        "device=auto: training on the CPU rather than %s: a model of %d parameters runs its "
        "uncaptured steps faster there (device=%s to insist)",
        device.type,
        num_parameters,
        device.type,
    )
    return torch.device("cpu")
