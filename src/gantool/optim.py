"""Build an optimizer from its config."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from gantool.config import OptimizerConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimizerConfig):
    """Adam or SGD, with the fused kernel (one update for all parameters) where available."""
    params = list(params)
    fused = _fused_supported(params)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, fused=fused)
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused)


def _fused_supported(params: list[torch.nn.Parameter]) -> bool | None:
    """True where torch has fused optimizer kernels (CPU and CUDA floating point tensors);
    None elsewhere, which lets torch choose its default (the foreach implementation on MPS)."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) or None
