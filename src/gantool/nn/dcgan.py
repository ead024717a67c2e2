"""The convolutional G and D of DCGAN (Radford et al. 2016), as pytorch/examples' dcgan builds
them, for image samples of any family whose sample shape is (channels, size, size).

G: noise (B, nz) as a 1x1 map -> a transposed convolution to `start` x `start` (4 for 32 and
64 px, 7 for 28), then one stride-2 transposed convolution per doubling, each but the last
followed by BatchNorm and ReLU, Tanh out. D: one stride-2 convolution per halving with
LeakyReLU(0.2), BatchNorm after every one but the first, then a convolution over the last
`start` x `start` map to one logit. Weights N(0, 0.02), BatchNorm's scale N(1, 0.02) and shift 0;
no biases, as there (but without BatchNorm).

Both take and give flat rows, as the MLPs do: G's samples are (B, C*H*W), D reads them and
reshapes, so streams, losses, the step and the metrics stay the same for both architectures.
A conditional model's class (the last column, as for the MLPs) is embedded and concatenated:
to G's noise, and to D's input as `label_dim` constant channels of the image size. That is the
MLP cGAN's conditioning carried over (so a conditional DCGAN and a conditional MLP differ only
in their layers), it needs nothing of D's last layer, and R1 and PacGAN's packing see plain
image channels. A projection discriminator (Miyato & Koyama 2018) conditions more sharply;
it is not here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gantool.config.schema import ModelConfig
from gantool.core.errors import ConfigError
from gantool.nn.mlp import split_classes

BASE_WIDTH = 64  # pytorch/examples' ngf and ndf


def doublings(size: int) -> tuple[int, int]:
    """(the number of stride-2 layers, the size they start from) for images size x size: halve
    while the size stays even and at least 4 (64 -> 4 in 4, 32 -> 4 in 3, 28 -> 7 in 2)."""
    count = 0
    while size % 2 == 0 and size // 2 >= 4:
        size //= 2
        count += 1
    return count, size


def widths(model: ModelConfig, shape: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """G's and D's channel widths for samples of `shape` (C, H, W): the configured ones, or
    DCGAN's 64 x 2^k; ConfigError for a shape or a list that does not fit."""
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ConfigError(
            f"model.arch=dcgan needs square images; these samples have shape {tuple(shape)}: "
            "use model.arch=mlp"
        )
    count, start = doublings(shape[1])
    if count == 0:
        raise ConfigError(
            f"model.arch=dcgan: {shape[1]} px images cannot be halved to a map of 4 px or more; "
            "use a size with a factor of 2 (28, 32, 64, ...)"
        )
    g = model.g.channels or [BASE_WIDTH * 2**k for k in reversed(range(count))]
    d = model.d.channels or [BASE_WIDTH * 2**k for k in range(count)]
    for key, chosen in (("model.g.channels", g), ("model.d.channels", d)):
        if len(chosen) != count:
            raise ConfigError(
                f"{key}={chosen}: {shape[1]} px images take {count} widths, one per doubling "
                f"from {start} px (for example {[BASE_WIDTH * 2**k for k in range(count)]})"
            )
        if min(chosen) < 1:
            raise ConfigError(f"{key}={chosen}: every width must be >= 1")
    return g, d


def init_weights(module: nn.Module) -> None:
    """DCGAN's initialisation: convolutions N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """Noise (B, latent_dim [+ 1]) -> images as rows (B, C*H*W) in [-1, 1]."""

    def __init__(self, model: ModelConfig, shape: tuple[int, int, int]):
        super().__init__()
        channels, _ = widths(model, shape)
        _, start = doublings(shape[1])
        cfg = model.g
        self.embedding = (
            nn.Embedding(model.num_classes, model.label_dim) if model.conditional else None
        )
        in_channels = model.latent_dim + (model.label_dim if model.conditional else 0)
        layers: list[nn.Module] = []
        kernels = [(start, 1, 0)] + [(4, 2, 1)] * (len(channels) - 1)
        for out, (kernel, stride, padding) in zip(channels, kernels, strict=True):
            layers.append(
                nn.ConvTranspose2d(
                    in_channels, out, kernel, stride, padding, bias=not cfg.batch_norm
                )
            )
            if cfg.batch_norm:
                layers.append(
                    nn.BatchNorm2d(out, eps=cfg.batch_norm_eps, momentum=cfg.batch_norm_momentum)
                )
            layers.append(nn.ReLU())
            in_channels = out
        layers += [nn.ConvTranspose2d(in_channels, shape[0], 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            z, classes = split_classes(z)
            z = torch.cat([self.embedding(classes), z], dim=1)
        return self.net(z[:, :, None, None]).flatten(1)


class DCGANDiscriminator(nn.Module):
    """Images as rows (B, C*H*W [+ 1]) -> one logit each (B, 1), or per pack of `pack`
    consecutive images (B / pack, 1), stacked along the channels (PacGAN)."""

    def __init__(self, model: ModelConfig, shape: tuple[int, int, int]):
        super().__init__()
        _, channels = widths(model, shape)
        _, start = doublings(shape[1])
        cfg = model.d
        self.shape, self.pack = shape, cfg.pack
        self.embedding = (
            nn.Embedding(model.num_classes, model.label_dim) if model.conditional else None
        )
        in_channels = (shape[0] + (model.label_dim if model.conditional else 0)) * cfg.pack
        layers: list[nn.Module] = []
        for i, out in enumerate(channels):
            # DCGAN's convolutions have no biases, the first's included; without BatchNorm
            # (a spectral-norm D, say) each has one.
            layers.append(nn.Conv2d(in_channels, out, 4, 2, 1, bias=not cfg.batch_norm))
            if cfg.batch_norm and i > 0:
                layers.append(
                    nn.BatchNorm2d(out, eps=cfg.batch_norm_eps, momentum=cfg.batch_norm_momentum)
                )
            layers.append(nn.LeakyReLU(cfg.negative_slope))
            in_channels = out
        layers.append(nn.Conv2d(in_channels, 1, start, 1, 0, bias=False))
        if cfg.spectral_norm:
            layers = [spectral_norm(m) if isinstance(m, nn.Conv2d) else m for m in layers]
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        classes = None
        if self.embedding is not None:
            x, classes = split_classes(x)
        x = x.reshape(-1, *self.shape)  # (B, C, H, W)
        if classes is not None:  # the class's embedding as constant channels
            label = self.embedding(classes)[:, :, None, None].expand(-1, -1, *self.shape[1:])
            x = torch.cat([x, label.to(x.dtype)], dim=1)
        if self.pack > 1:  # (B, C, H, W) -> (B / pack, pack * C, H, W)
            x = x.reshape(-1, self.pack * x.shape[1], *self.shape[1:])
        return self.net(x).reshape(-1, 1)
