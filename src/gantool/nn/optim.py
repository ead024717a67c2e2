"""Build an optimizer from its config."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from gantool.config.schema import OptimizerConfig

# How an optimizer runs, as opposed to what it computes. They are chosen for this machine and
# this run when it is built, and kept when a checkpoint is loaded: torch's load_state_dict
# would otherwise take them from the checkpoint, written perhaps on another device or by a run
# with CUDA graphs on (capturable) or off.
IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable")


def build_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: OptimizerConfig, capturable: bool = False
) -> torch.optim.Optimizer:
    """Adam or SGD, with the fused kernel (one update for all parameters) where available.

    `capturable`: the step may be captured in a CUDA graph (trainer.cuda_graph), so Adam keeps
    its step count on the device and never reads it back. It applies to CUDA parameters only:
    torch refuses it for the others, and the fused CPU kernel would ignore it. SGD has no such
    flag and needs none: once its momentum buffers exist, its step never reads back either.
    """
    params = list(params)
    fused = _fused_supported(params)
    if cfg.name == "sgd":
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, fused=fused)
    else:
        capturable = capturable and all(p.device.type == "cuda" for p in params)
        optimizer = torch.optim.Adam(
            params, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused, capturable=capturable
        )
    own = {k: optimizer.defaults[k] for k in IMPLEMENTATION_KEYS if k in optimizer.defaults}
    optimizer.register_load_state_dict_post_hook(lambda opt: _keep_implementation(opt, own))
    return optimizer


def _keep_implementation(optimizer: torch.optim.Optimizer, own: dict) -> None:
    """After load_state_dict: this optimizer's own implementation flags, and Adam's step
    counts where they must live, on the parameter's device when fused or capturable (a
    captured step must find them there), else on the CPU, as torch keeps them then."""
    for group in optimizer.param_groups:
        group.update(own)
        on_device = group.get("fused") or group.get("capturable")
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if isinstance(step, torch.Tensor):
                optimizer.state[p]["step"] = step.to(p.device if on_device else "cpu")


def _fused_supported(params: list[torch.nn.Parameter]) -> bool | None:
    """True where torch has fused optimizer kernels (CPU and CUDA floating point tensors);
    None elsewhere, which lets torch choose its default (the foreach implementation on MPS)."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) or None
