"""Mixtures of isotropic Gaussians in D dimensions: the stream, the pictures and PacGAN's mode
metrics (and, in 1-D, the Gaussian's KS, W1 and moments against the mixture).

The metrics follow PacGAN's code (fjxmlzn/PacGAN, synthetic_data_experiments, MetricLogger):
each sample goes to the centre nearest in std-normalised distance |x - centre| / std; it is
*high quality* when that distance is below 3. *Modes* counts the centres with at least one
high-quality sample; *reverse KL* is KL(p || w) in nats, where p is the histogram of the
high-quality samples over the centres (normalised by their number) and w the true weights.
A centre without samples adds 0 log 0 = 0, so the value stays finite: ln(8) when every sample
sits on one mode of the 8-mode ring. With no high-quality sample at all it is NaN.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gantool.config.datasets import MixtureConfig
from gantool.config.schema import Config
from gantool.core.errors import GantoolError
from gantool.datasets.epochs import Epochs
from gantool.datasets.family import Family
from gantool.nn.metrics import moments
from gantool.nn.mlp import generate, seeded_latent
from gantool.plots.samples import mixture_histogram, mixture_scatter
from gantool.plots.training import moments_over_training

HIGH_QUALITY_STDS = 3.0  # PacGAN's dis_thre: within 3 stds of the nearest centre
CHUNK = 16384  # samples per block of the (N, K) distance matrix


def targets(cfg: MixtureConfig) -> dict[str, float]:
    """Reverse KL 0; for D = 1 also the mixture's own moments, and 0 KS and W1. (Modes and
    high quality are higher-is-better.)"""
    if cfg.dim > 1:
        return {"eval/reverse_kl": 0.0}
    weights, means = cfg.probabilities(), [c[0] for c in cfg.centres]
    mean = math.fsum(w * m for w, m in zip(weights, means, strict=True))

    def central(power: int) -> float:  # E[(X - mean)^power] of the mixture
        total = 0.0
        for w, m, s in zip(weights, means, cfg.stds(), strict=True):
            d = m - mean
            terms = {
                2: d**2 + s**2,
                3: d**3 + 3 * d * s**2,
                4: d**4 + 6 * d**2 * s**2 + 3 * s**4,
            }
            total += w * terms[power]
        return total

    variance = central(2)
    return {
        "eval/mean": mean,
        "eval/std": math.sqrt(variance),
        "eval/skewness": central(3) / variance**1.5,
        "eval/excess_kurtosis": central(4) / variance**2 - 3.0,
        "eval/ks": 0.0,
        "eval/w1": 0.0,
        "eval/reverse_kl": 0.0,
    }


class MixtureStream:
    """Batches (B, D) of the mixture: fresh draws for ever, or with `num_samples` a fixed set
    drawn once from the seed and reshuffled every epoch (the last partial batch dropped)."""

    def __init__(self, cfg: MixtureConfig, batch_size: int, seed: int, device: torch.device):
        self.centres = torch.tensor(cfg.centres, dtype=torch.float32)  # (K, D)
        self.stds = torch.tensor(cfg.stds(), dtype=torch.float32)  # (K,)
        self.weights = torch.tensor(cfg.probabilities(), dtype=torch.float64)  # (K,)
        self.data_dim = cfg.dim
        self.batch_size = batch_size
        self.device = device
        # Its own generator, so the data does not depend on how much noise G has drawn.
        self.generator = torch.Generator().manual_seed(seed)
        self.points: torch.Tensor | None = None
        self.epochs: Epochs | None = None  # the fixed set's reader, with num_samples
        self.batches_per_epoch: int | None = None  # None: endless
        self.epoch_size: int | None = None
        if cfg.num_samples is not None:
            if cfg.num_samples < batch_size:
                raise GantoolError(
                    f"trainer.batch_size={batch_size} is larger than the mixture's training set "
                    f"(dataset.num_samples={cfg.num_samples})"
                )
            self.points = self.draw(cfg.num_samples).to(device)  # (N, D), drawn once
            self.epochs = Epochs(self.points, batch_size, self.generator)
            self.batches_per_epoch = self.epochs.batches_per_epoch
            self.epoch_size = self.epochs.epoch_size

    def draw(self, num: int) -> torch.Tensor:
        """`num` fresh samples (num, D): a component by weight, then its Gaussian. One component
        draws no component index, so a 1-D one gives the Gaussian family's very numbers."""
        noise_shape = (num, self.data_dim)
        if len(self.centres) == 1:
            return (
                self.centres[0] + torch.randn(noise_shape, generator=self.generator) * self.stds[0]
            )
        k = torch.multinomial(self.weights, num, replacement=True, generator=self.generator)
        noise = torch.randn(noise_shape, generator=self.generator)  # (num, D)
        return self.centres[k] + noise * self.stds[k, None]

    def next_batch(self) -> torch.Tensor:
        if self.epochs is None:
            return self.draw(self.batch_size).to(self.device)  # (B, D)
        return self.epochs.next_batch()  # (B, D)

    def state_dict(self) -> dict:
        # The fixed set itself is not saved: the seed draws it again, identically.
        if self.epochs is None:
            return {"generator": self.generator.get_state()}
        return self.epochs.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.epochs is None:
            self.generator.set_state(state["generator"])
        else:
            self.epochs.load_state_dict(state)


# --- metrics --------------------------------------------------------------------------------------
def mode_report(samples: torch.Tensor, cfg: MixtureConfig) -> dict:
    """PacGAN's mode metrics of samples (N, D) (see the module's docstring): `modes` captured,
    `high_quality_percent`, `reverse_kl` (nats) and `mode_counts`, the high-quality samples
    of each component."""
    x = samples.detach().double().cpu()
    centres = torch.tensor(cfg.centres, dtype=torch.float64)  # (K, D)
    stds = torch.tensor(cfg.stds(), dtype=torch.float64)  # (K,)
    counts = torch.zeros(len(centres), dtype=torch.long)
    num_high_quality = 0
    for part in x.split(CHUNK):
        distance = torch.cdist(part, centres) / stds  # (C, K), in each component's stds
        nearest, k = distance.min(dim=1)  # (C,); NaN samples give NaN, never high quality
        high = nearest < HIGH_QUALITY_STDS
        counts += torch.bincount(k[high], minlength=len(centres))
        num_high_quality += int(high.sum())
    weights = torch.tensor(cfg.probabilities(), dtype=torch.float64)
    if num_high_quality:
        shares = counts.double() / num_high_quality  # (K,)
        reverse_kl = torch.xlogy(shares, shares / weights).sum().item()  # 0 log 0 = 0
    else:
        reverse_kl = math.nan
    return {
        "modes": int((counts > 0).sum()),
        "high_quality_percent": 100.0 * num_high_quality / max(1, len(x)),
        "reverse_kl": reverse_kl,
        "mode_counts": counts.tolist(),
    }


def mixture_cdf(x: torch.Tensor, cfg: MixtureConfig) -> torch.Tensor:
    """The 1-D mixture's CDF at x (N,), in float64."""
    centres = torch.tensor([c[0] for c in cfg.centres], dtype=torch.float64)  # (K,)
    stds = torch.tensor(cfg.stds(), dtype=torch.float64)
    weights = torch.tensor(cfg.probabilities(), dtype=torch.float64)
    return torch.special.ndtr((x.double()[:, None] - centres) / stds) @ weights  # (N,)


def mixture_quantiles(levels: torch.Tensor, cfg: MixtureConfig) -> torch.Tensor:
    """The 1-D mixture's quantiles at levels (N,) in (0, 1), by bisection of its CDF: 100
    halvings of a bracket 12 stds beyond the outer centres, which holds every level down to
    1e-32 and narrows to far below float64's resolution."""
    means, stds = [c[0] for c in cfg.centres], cfg.stds()
    widest = 12 * max(stds)
    lo = torch.full_like(levels, min(means) - widest, dtype=torch.float64)
    hi = torch.full_like(levels, max(means) + widest, dtype=torch.float64)
    for _ in range(100):
        mid = (lo + hi) / 2
        below = mixture_cdf(mid, cfg) < levels
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def one_d_report(samples: torch.Tensor, cfg: MixtureConfig) -> dict:
    """The Gaussian family's numbers for 1-D samples (N, 1) against the mixture: moments, the
    KS statistic and the W1 distance (sorted samples against the quantiles at (i - ½)/N, the
    optimal coupling), as metrics.ks_statistic and metrics.wasserstein1 give them for one
    Gaussian."""
    x = samples.flatten().double().sort().values  # (N,)
    n = len(x)
    cdf = mixture_cdf(x, cfg)
    above = torch.arange(1, n + 1, dtype=torch.float64) / n - cdf  # F_n just after each sample
    below = cdf - torch.arange(0, n, dtype=torch.float64) / n  # ... and just before it
    levels = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    w1 = (x - mixture_quantiles(levels, cfg)).abs().mean().item()
    mean, std, skewness, kurtosis = moments(samples.double().reshape(-1, 1)).squeeze(1).tolist()
    return {
        "w1": w1,
        "ks": max(above.max().item(), below.max().item()),
        "mean": mean,
        "std": std,
        "skewness": skewness,
        "excess_kurtosis": kurtosis,
    }


def caption(report: dict, cfg: MixtureConfig) -> str:
    """The mode metrics in a picture's title."""
    return (
        f"{report['modes']}/{len(cfg.centres)} modes, "
        f"{report['high_quality_percent']:.1f}% high quality, "
        f"reverse KL {report['reverse_kl']:.2f}"
    )


class Mixture(Family):
    schema = MixtureConfig
    label = "Gaussian mixture"
    # `gantool sample`: pictures, and the samples as arrays; PacGAN's 2,500 points by default.
    picture_formats = (".png", ".pdf", ".svg")
    raw_formats = (".npy", ".pt")
    default_num = 2500

    def describe(self, ds: MixtureConfig) -> str:
        drawn = f", {ds.num_samples:,} points drawn once" if ds.num_samples else ""
        return f"a mixture of {len(ds.centres)} Gaussians in {ds.dim}-D{drawn}"

    def sample_shape(self, ds: MixtureConfig) -> tuple[int, ...]:
        return (ds.dim,)

    def epoch_size(self, ds: MixtureConfig) -> int | None:
        return ds.num_samples

    def stream(self, ds: MixtureConfig, batch_size, seed, device, labels=False) -> MixtureStream:
        return MixtureStream(ds, batch_size, seed, device)

    def targets(self, ds: MixtureConfig) -> dict[str, float]:
        return targets(ds)

    def evaluate(
        self, cfg: Config, generator: nn.Module, device: torch.device, num: int, seed: int, recipe
    ) -> dict:
        """Modes, % high quality and reverse KL of `num` samples of seeded noise (PacGAN:
        2,500); in 1-D also the moments, KS and W1."""
        z = seeded_latent(num, cfg.model, device, seed)
        samples = generate(generator, z).cpu()  # (num, D)
        report = mode_report(samples, cfg.dataset)
        results = {"eval/num_samples": num, **{f"eval/{k}": v for k, v in report.items()}}
        if cfg.dataset.dim == 1:
            results |= {f"eval/{k}": v for k, v in one_d_report(samples, cfg.dataset).items()}
        return results

    def max_num(self, fmt: str) -> int:
        """A scatter or histogram of up to 1,000,000 points; 10,000,000 rows in a file."""
        return 1_000_000 if fmt in self.picture_formats else 10_000_000

    def picture(
        self, samples: torch.Tensor, ds: MixtureConfig, fmt: str, title: str, classes=None
    ) -> bytes:
        """1-D: a histogram against the mixture's density; else a scatter over the centres
        (the first two coordinates) beside the samples' density; the title gives the modes."""
        title = f"{title}  {caption(mode_report(samples, ds), ds)}".strip()
        if ds.dim == 1:
            means = [c[0] for c in ds.centres]
            values = samples[:, 0].numpy()
            return mixture_histogram(
                values, means, ds.stds(), ds.probabilities(), title, fmt.lstrip(".")
            )
        spreads = ds.stds()
        return mixture_scatter(samples.numpy(), ds.centres, spreads, title, fmt.lstrip("."))

    def values(self, samples: torch.Tensor, ds: MixtureConfig) -> torch.Tensor:
        """The samples as a file holds them: (N, D), or (N,) in 1-D as the Gaussian's."""
        return samples[:, 0] if samples.shape[1] == 1 else samples

    def plots(self, rows: list[dict], ds: MixtureConfig) -> dict[str, bytes]:
        """1-D: G's mean and std over training against the mixture's; nothing more in D > 1."""
        if ds.dim > 1:
            return {}
        want = targets(ds)
        return {"moments.png": moments_over_training(rows, want["eval/mean"], want["eval/std"])}


MIXTURE = Mixture()
