"""Build an optimizer from its config."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from gantool.config import OptimizerConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimizerConfig):
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas))
