"""The 1-D Gaussian N(mean, std²): an endless stream of samples, a histogram against the
target density, and moments, KS and W1 against the target."""

from __future__ import annotations

import torch
from torch import nn

from gantool.config.datasets import GaussianConfig
from gantool.config.schema import Config
from gantool.datasets.family import Family
from gantool.nn.metrics import gaussian_report
from gantool.nn.mlp import generate, seeded_latent
from gantool.plots.samples import gaussian_histogram
from gantool.plots.training import moments_over_training


class GaussianStream:
    data_dim = 1
    batches_per_epoch = None  # endless
    epoch_size = None

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


class Gaussian(Family):
    schema = GaussianConfig
    label = "Gaussian"
    # `gantool sample`: the picture and raw formats, and enough values for a smooth histogram.
    picture_formats = (".png", ".pdf", ".svg")
    raw_formats = (".npy", ".pt", ".csv")
    default_num = 10_000

    def describe(self, ds: GaussianConfig) -> str:
        return f"the Gaussian N({ds.mean:g}, {ds.std:g}²)"

    def sample_shape(self, ds: GaussianConfig) -> tuple[int, ...]:
        return (1,)

    def stream(self, ds: GaussianConfig, batch_size, seed, device, labels=False) -> GaussianStream:
        return GaussianStream(ds, batch_size, seed, device)

    def targets(self, ds: GaussianConfig) -> dict[str, float]:
        perfect = {"eval/skewness": 0.0, "eval/excess_kurtosis": 0.0, "eval/ks": 0.0}
        return {"eval/mean": ds.mean, "eval/std": ds.std, **perfect, "eval/w1": 0.0}

    def evaluate(
        self, cfg: Config, generator: nn.Module, device: torch.device, num: int, seed: int, recipe
    ) -> dict:
        """Moments, KS and W1 of `num` generated values against cfg.dataset's N(mean, std²)."""
        samples = generate(generator, seeded_latent(num, cfg.model, device, seed)).cpu()
        report = gaussian_report(samples, cfg.dataset.mean, cfg.dataset.std)  # samples (num, 1)
        values = {f"eval/{k}": v["generated"] for k, v in report.items()}
        return {"eval/num_samples": num, **values}

    def picture(
        self, samples: torch.Tensor, ds: GaussianConfig, fmt: str, title: str, classes=None
    ) -> bytes:
        """A histogram of samples (N, 1) against the target density."""
        values = samples[:, 0].numpy()
        return gaussian_histogram(values, ds.mean, ds.std, title, fmt.lstrip("."))

    def values(self, samples: torch.Tensor, ds: GaussianConfig) -> torch.Tensor:
        """The samples (N, 1) as a file holds them: (N,)."""
        return samples[:, 0]

    def columns(self, ds: GaussianConfig) -> list[str]:
        return ["x"]

    def plots(self, rows: list[dict], ds: GaussianConfig) -> dict[str, bytes]:
        """G's mean and std over training, against the targets."""
        return {"moments.png": moments_over_training(rows, ds.mean, ds.std)}


GAUSSIAN = Gaussian()
