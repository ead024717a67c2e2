"""Training data as endless batch streams on the training device, with resumable state.

Each stream has `data_dim`, `batches_per_epoch` (None when endless), `next_batch()` giving a
(batch_size, data_dim) tensor in the model's range, and `state_dict()` / `load_state_dict()`.
"""

from __future__ import annotations

import torch

from gantool.config import GaussianConfig, MnistConfig
from gantool.data.gaussian import GaussianStream
from gantool.data.mnist import MnistStream


def build_data(
    cfg: GaussianConfig | MnistConfig, batch_size: int, seed: int, device: torch.device
) -> GaussianStream | MnistStream:
    if isinstance(cfg, GaussianConfig):
        return GaussianStream(cfg, batch_size, seed, device)
    return MnistStream(cfg, batch_size, seed, device)


def data_dim(cfg: GaussianConfig | MnistConfig) -> int:
    """The size of one flattened sample: what G outputs and D reads."""
    return (GaussianStream if isinstance(cfg, GaussianConfig) else MnistStream).data_dim


__all__ = ["GaussianStream", "MnistStream", "build_data", "data_dim"]
