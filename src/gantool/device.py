"""Pick the torch device named by the `device` config."""

from __future__ import annotations

import torch

from gantool.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """auto: CUDA, then MPS, then CPU. A named device that is missing is a ConfigError."""
    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ConfigError(f"device={name}: not available on this machine; use device=auto or cpu")
    return torch.device(name)
