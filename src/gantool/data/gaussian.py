"""The 1-D Gaussian N(mean, std²) as an endless stream of batches."""

from __future__ import annotations

from pathlib import Path

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


class Gaussian:
    """The Gaussian family's behaviour (see gantool.data)."""

    name = "gaussian"
    data_dim = GaussianStream.data_dim
    stream = GaussianStream
    picture_kind = "histogram"  # how TensorBoard shows a sample set

    @staticmethod
    def check_available(cfg: GaussianConfig) -> None:
        """An endless stream of draws: always there."""

    @staticmethod
    def draw(samples: torch.Tensor, cfg: GaussianConfig, path: Path, title: str) -> None:
        """A histogram of samples (N, 1) against the target density."""
        from gantool.sampling import save_samples

        save_samples(samples, cfg, path, title)

    @staticmethod
    def plots(rows: list[dict], cfg: GaussianConfig, folder: Path) -> None:
        """G's mean and std over training, against the targets."""
        from gantool.plots import moments_over_training

        moments_over_training(rows, cfg.mean, cfg.std, folder / "moments.png")
