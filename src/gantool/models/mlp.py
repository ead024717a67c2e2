"""MLP generator and discriminator: plain nn.Modules built from their config.

Each hidden block is Linear -> activation -> [BatchNorm] -> [Dropout], the order of the Keras
MLP GAN that the `keras_mnist` preset reproduces, or with `batch_norm_before_activation`
Linear -> BatchNorm -> activation -> [Dropout], PacGAN's. A maxout block's Linear has
`pieces` units for each output, and the activation keeps the largest of each group.
"""

from __future__ import annotations

import torch
from torch import nn

from gantool.config import DiscriminatorConfig, GeneratorConfig, ModelConfig
from gantool.metrics import moments


def activation(name: str, negative_slope: float = 0.2) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    table = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    return table[name]()


class Maxout(nn.Module):
    """(B, width * pieces) -> (B, width): the largest of each run of `pieces` consecutive units,
    as blocks' LinearMaxout (and PacGAN's D) groups them."""

    def __init__(self, pieces: int):
        super().__init__()
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, width, pieces) -> (B, width); max's backward is cheaper than amax's here
        return x.unflatten(-1, (-1, self.pieces)).max(dim=-1).values

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


def mlp(in_dim: int, out_dim: int, cfg: GeneratorConfig | DiscriminatorConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    maxout = cfg.activation == "maxout"
    for width in cfg.hidden:
        units = width * cfg.pieces if maxout else width  # what the Linear puts out
        linear = nn.Linear(in_dim, units, bias=cfg.bias)
        act = Maxout(cfg.pieces) if maxout else activation(cfg.activation, cfg.negative_slope)
        if not cfg.batch_norm:
            layers += [linear, act]
        elif cfg.batch_norm_before_activation:
            norm = nn.BatchNorm1d(units, eps=cfg.batch_norm_eps, momentum=cfg.batch_norm_momentum)
            layers += [linear, norm, act]
        else:
            norm = nn.BatchNorm1d(width, eps=cfg.batch_norm_eps, momentum=cfg.batch_norm_momentum)
            layers += [linear, act, norm]
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    if cfg.init_std > 0:  # N(0, init_std²) weights and zero biases, for every Linear
        for layer in layers:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, 0.0, cfg.init_std)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


def sample_latent(
    num: int, cfg: ModelConfig, device: torch.device, generator: torch.Generator | None = None
) -> torch.Tensor:
    """G's input noise (num, latent_dim): N(0, 1) or U[0, 1), from `generator` if given."""
    shape = (num, cfg.latent_dim)
    if cfg.noise == "uniform":
        return torch.rand(shape, device=device, generator=generator)
    return torch.randn(shape, device=device, generator=generator)


@torch.no_grad()
def generate(generator: nn.Module, z: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """G's samples for noise z, in eval mode (BatchNorm uses its running statistics)."""
    was_training = generator.training
    generator.eval()
    out = torch.cat([generator(part) for part in z.split(chunk)])
    generator.train(was_training)
    return out


class Generator(nn.Module):
    """Maps noise (B, latent_dim) to samples (B, data_dim)."""

    def __init__(self, cfg: ModelConfig, data_dim: int):
        super().__init__()
        self.net = mlp(cfg.latent_dim, data_dim, cfg.g)
        if cfg.g.out_activation != "none":
            self.net.append(activation(cfg.g.out_activation, cfg.g.negative_slope))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MomentFeatures(nn.Module):
    """(B, F) samples -> (1, 4F): the batch's mean, std, skewness and excess kurtosis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return moments(x).reshape(1, -1)


class Discriminator(nn.Module):
    """Scores samples (B, data_dim) with logits: (B, 1) on samples, (1, 1) on moments."""

    def __init__(self, cfg: DiscriminatorConfig, data_dim: int):
        super().__init__()
        if cfg.features == "moments":
            self.features: nn.Module = MomentFeatures()
            in_dim = 4 * data_dim
        else:
            self.features = nn.Identity()
            in_dim = data_dim
        self.net = mlp(in_dim, 1, cfg)  # ends in a logit: the loss applies the sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.features(x))
