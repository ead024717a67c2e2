"""Turn generated samples into files: an image grid for MNIST, a histogram for the Gaussian."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from gantool.config import Config, GaussianConfig, MnistConfig
from gantool.models import Generator, generate, sample_latent
from gantool.plots import gaussian_histogram


def save_samples(
    samples: torch.Tensor, dataset: GaussianConfig | MnistConfig, path: Path, title: str = ""
) -> None:
    """Write samples (N, data_dim) as a PNG: a grid of digits, or a histogram against the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = samples.detach().float().cpu()
    if isinstance(dataset, GaussianConfig):
        gaussian_histogram(samples[:, 0].numpy(), dataset.mean, dataset.std, path, title)
        return
    from torchvision.utils import save_image  # slow import: only where images are drawn

    images = samples.reshape(-1, 1, 28, 28)
    nrow = math.ceil(math.sqrt(len(images)))
    save_image(images, path, nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1.0)


@dataclass
class Trained:
    """A checkpoint's generator, ready to sample from, with where it came from."""

    checkpoint: Path
    run_dir: Path
    step: int
    config: Config
    generator: Generator  # the EMA generator when the run kept one
    device: torch.device


def load_generator(path: str | Path, device_name: str) -> Trained:
    """The generator of a checkpoint file, or of a run folder's latest checkpoint."""
    from gantool.checkpoint import load_checkpoint, resolve_checkpoint
    from gantool.config import to_config
    from gantool.data import data_dim
    from gantool.device import resolve_device

    ckpt = resolve_checkpoint(path)
    device = resolve_device(device_name)
    state = load_checkpoint(ckpt)
    cfg = to_config(state["config"])
    G = Generator(cfg.model, data_dim(cfg.dataset)).to(device)
    G.load_state_dict(state["gan"].get("ema", state["gan"]["generator"]))  # EMA if trained
    return Trained(ckpt, ckpt.parent.parent, state["step"], cfg, G, device)


def sample_checkpoint(
    path: str | Path, num: int, out: Path | None, seed: int, device_name: str
) -> list[Path]:
    """Sample `num` points from a checkpoint's generator; return the files written.

    MNIST: a grid PNG. Gaussian: a histogram PNG, and the samples as CSV beside it.
    """
    trained = load_generator(path, device_name)
    cfg, device = trained.config, trained.device
    z = sample_latent(num, cfg.model, device, torch.Generator(device).manual_seed(seed))
    samples = generate(trained.generator, z).cpu()  # (num, data_dim)

    step = trained.step
    if out is None:
        out = trained.run_dir / "samples" / f"sample_step_{step:07d}.png"
    save_samples(samples, cfg.dataset, out, f"step {step}")
    written = [out]
    if isinstance(cfg.dataset, GaussianConfig):
        csv = out.with_suffix(".csv")
        csv.write_text("x\n" + "".join(f"{v:.6g}\n" for v in samples[:, 0].tolist()))
        written.append(csv)
    return written
