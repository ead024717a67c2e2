"""The 1-D Gaussian N(mean, std²) as an endless stream of batches."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gantool.config import Config, GaussianConfig


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

    @staticmethod
    def data_dim(cfg) -> int:
        return GaussianStream.data_dim

    stream = GaussianStream

    @staticmethod
    def check_available(cfg: GaussianConfig) -> None:
        """An endless stream of draws: always there."""

    # `gantool sample`: the picture and raw formats, and enough values for a smooth histogram.
    label = "Gaussian"
    picture_formats = (".png", ".pdf", ".svg")
    raw_formats = (".npy", ".pt", ".csv")
    default_num = 10_000

    @staticmethod
    def max_num(fmt: str) -> int:
        return 10_000_000  # 40 MB of float32 values

    @staticmethod
    def picture(samples: torch.Tensor, cfg: GaussianConfig, fmt: str, title: str) -> bytes:
        """A histogram of samples (N, 1) against the target density, as fmt (.png, ...)."""
        from gantool.plots import gaussian_histogram

        values = samples[:, 0].numpy()
        return gaussian_histogram(values, cfg.mean, cfg.std, title, fmt.lstrip("."))

    @staticmethod
    def values(samples: torch.Tensor, cfg: GaussianConfig) -> torch.Tensor:
        """The samples (N, 1) as a file holds them: (N,)."""
        return samples[:, 0]

    @staticmethod
    def columns(cfg: GaussianConfig) -> list[str]:
        """A CSV file's header."""
        return ["x"]

    @staticmethod
    def plots(rows: list[dict], cfg: GaussianConfig, folder: Path) -> None:
        """G's mean and std over training, against the targets."""
        from gantool.plots import moments_over_training

        moments_over_training(rows, cfg.mean, cfg.std, folder / "moments.png")

    @staticmethod
    def evaluate(
        cfg: Config, generator: nn.Module, device: torch.device, num: int, seed: int, recipe=None
    ) -> dict:
        """Moments, KS and W1 of `num` generated values; the targets are cfg.dataset's mean
        and std, 0 skewness and excess kurtosis, and 0 KS and W1. (`recipe`: MNIST's.)"""
        from gantool.evaluate import latent
        from gantool.metrics import gaussian_report
        from gantool.models import generate

        samples = generate(generator, latent(cfg, num, device, seed)).cpu()  # (num, 1)
        report = gaussian_report(samples, cfg.dataset.mean, cfg.dataset.std)
        values = {f"eval/{k}": v["generated"] for k, v in report.items()}
        return {"eval/num_samples": num, **values}

    @staticmethod
    def for_evaluation(cfg: GaussianConfig, started_in: Path | None, data_root) -> GaussianConfig:
        """Nothing to find: the target is in the config."""
        return cfg
