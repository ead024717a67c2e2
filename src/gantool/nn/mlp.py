"""MLP generator and discriminator: plain nn.Modules built from their config.

Each hidden block is Linear -> activation -> [BatchNorm] -> [Dropout], the order of the Keras
MLP GAN that the `keras_mnist` preset reproduces, or with `batch_norm_before_activation`
Linear -> BatchNorm -> activation -> [Dropout], PacGAN's. A maxout block's Linear has
`pieces` units for each output, and the activation keeps the largest of each group. With
`first_block_plain` the first hidden block has neither BatchNorm nor dropout (PyTorch-GAN's
cGAN).

A conditional model's inputs carry the class as their last column: G's noise is
(B, latent_dim + 1) and D's samples (B, data_dim + 1), the class index as a float. Each net
splits it off and embeds it (the cGAN of Mirza & Osindero: the embedding is concatenated to
the input), so the rest of gantool passes one tensor around as for any model. G's output has
no label column: it is the sample alone.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gantool.config.schema import DiscriminatorConfig, GeneratorConfig, ModelConfig
from gantool.nn.metrics import moments


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
    for i, width in enumerate(cfg.hidden):
        plain = i == 0 and cfg.first_block_plain
        units = width * cfg.pieces if maxout else width  # what the Linear puts out
        linear = nn.Linear(in_dim, units, bias=cfg.bias)
        act = Maxout(cfg.pieces) if maxout else activation(cfg.activation, cfg.negative_slope)
        if not cfg.batch_norm or plain:
            layers += [linear, act]
        elif cfg.batch_norm_before_activation:
            norm = nn.BatchNorm1d(units, eps=cfg.batch_norm_eps, momentum=cfg.batch_norm_momentum)
            layers += [linear, norm, act]
        else:
            norm = nn.BatchNorm1d(width, eps=cfg.batch_norm_eps, momentum=cfg.batch_norm_momentum)
            layers += [linear, act, norm]
        if cfg.dropout > 0 and not plain:
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
    num: int,
    cfg: ModelConfig,
    device: torch.device,
    generator: torch.Generator | None = None,
    classes: torch.Tensor | None = None,
) -> torch.Tensor:
    """G's input noise (num, latent_dim): N(0, 1) or U[0, 1), from `generator` if given. A
    conditional model's gains a last column (see with_classes): `classes` (num,), else classes
    drawn uniformly."""
    shape = (num, cfg.latent_dim)
    if cfg.noise == "uniform":
        z = torch.rand(shape, device=device, generator=generator)
    else:
        z = torch.randn(shape, device=device, generator=generator)
    if not cfg.conditional:
        return z
    if classes is None:
        classes = torch.randint(cfg.num_classes, (num,), device=device, generator=generator)
    return with_classes(z, classes)


def seeded_latent(
    num: int, cfg: ModelConfig, device: torch.device, seed: int, classes: torch.Tensor | None = None
) -> torch.Tensor:
    """Noise of its own seeded generator (an evaluation's, a sample command's): no RNG of the
    run moves, and the same seed gives the same noise."""
    return sample_latent(num, cfg, device, torch.Generator(device).manual_seed(seed), classes)


def with_classes(x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(N, F) rows and their classes (N,) as a conditional net's input (N, F + 1)."""
    return torch.cat([x, classes.to(x.dtype).unsqueeze(1)], dim=1)


def split_classes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A conditional net's input (N, F + 1) as its rows (N, F) and classes (N,), int64."""
    return x[:, :-1], x[:, -1].long()


def row_classes(num: int, num_classes: int, device: torch.device) -> torch.Tensor:
    """Classes for a picture of `num` samples, in blocks as even as they divide: one row per
    class (10 x 10 for 100 samples of 10 classes; 64 samples make rows of 6 and 7)."""
    return torch.arange(num, device=device) * num_classes // num


@torch.no_grad()
def generate(generator: nn.Module, z: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """G's samples for noise z, in eval mode (BatchNorm uses its running statistics)."""
    was_training = generator.training
    generator.eval()
    out = torch.cat([generator(part) for part in z.split(chunk)])
    generator.train(was_training)
    return out


class Generator(nn.Module):
    """Maps noise (B, latent_dim) to samples (B, data_dim); a conditional G's noise ends in a
    class column, whose embedding goes in before the noise (PyTorch-GAN's cGAN order)."""

    def __init__(self, cfg: ModelConfig, data_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(cfg.num_classes, cfg.label_dim) if cfg.conditional else None
        extra = cfg.label_dim if cfg.conditional else 0
        self.net = mlp(cfg.latent_dim + extra, data_dim, cfg.g)
        if cfg.g.out_activation != "none":
            self.net.append(activation(cfg.g.out_activation, cfg.g.negative_slope))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            z, classes = split_classes(z)
            z = torch.cat([self.embedding(classes), z], dim=1)
        return self.net(z)


class MomentFeatures(nn.Module):
    """(B, F) samples -> (1, 4F): the batch's mean, std, skewness and excess kurtosis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return moments(x).reshape(1, -1)


class Discriminator(nn.Module):
    """Scores samples (B, data_dim) with one raw number each, a logit under bce: (B, 1) on
    samples, (B / pack, 1) on packs of `pack` consecutive samples (PacGAN), (1, 1) on moments.
    A conditional D's samples end in a class column, whose embedding goes in after the sample.
    With `spectral_norm` every Linear's weight is divided by its largest singular value,
    estimated by one power iteration per forward pass in training (torch's parametrisation;
    its vectors are buffers, so checkpoints keep them)."""

    def __init__(self, model: ModelConfig, data_dim: int):
        super().__init__()
        cfg = model.d
        self.pack = cfg.pack
        self.embedding = (
            nn.Embedding(model.num_classes, model.label_dim) if model.conditional else None
        )
        in_dim = data_dim + (model.label_dim if model.conditional else 0)
        if cfg.features == "moments":
            self.features: nn.Module = MomentFeatures()
            in_dim = 4 * in_dim
        else:
            self.features = nn.Identity()
        self.net = mlp(in_dim * cfg.pack, 1, cfg)
        if cfg.spectral_norm:
            for i, layer in enumerate(self.net):
                if isinstance(layer, nn.Linear):
                    self.net[i] = spectral_norm(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            x, classes = split_classes(x)
            x = torch.cat([x, self.embedding(classes)], dim=1)
        x = self.features(x)
        if self.pack > 1:  # (B, F) -> (B / pack, pack * F): consecutive samples side by side
            x = x.reshape(x.shape[0] // self.pack, -1)
        return self.net(x)
