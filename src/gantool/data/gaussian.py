"""The 1-D Gaussian N(mean, std²) as an endless stream of batches."""

from __future__ import annotations

import torch

from gantool.config import GaussianConfig


class GaussianStream:
    data_dim = 1
    batches_per_epoch = None  # endless

    def __init__(self, cfg: GaussianConfig, batch_size: int, seed: int, device: torch.device):
        self.mean, self.std = cfg.mean, cfg.std
        self.batch_size = batch_size
        self.device = device
        # Its own generator, so the data does not depend on how much noise G has drawn.
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> torch.Tensor:
        x = torch.randn((self.batch_size, 1), generator=self.generator)  # (B, 1)
        return (x * self.std + self.mean).to(self.device)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
