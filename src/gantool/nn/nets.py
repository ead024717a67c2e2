"""G and D as model.arch builds them, for samples of a given shape: the one place that
chooses between the MLPs (gantool.nn.mlp) and DCGAN's convolutional nets (gantool.nn.dcgan).
Both take and give flat rows, so nothing else needs to know which it has."""

from __future__ import annotations

import math

from torch import nn

from gantool.config.schema import ModelConfig
from gantool.core.errors import ConfigError
from gantool.nn.dcgan import DCGANDiscriminator, DCGANGenerator, widths
from gantool.nn.mlp import Discriminator, Generator


def generator(model: ModelConfig, shape: tuple[int, ...]) -> nn.Module:
    """G for samples of `shape`: (D,) vectors or (C, H, W) images."""
    if model.arch == "dcgan":
        return DCGANGenerator(model, shape)
    return Generator(model, math.prod(shape))


def discriminator(model: ModelConfig, shape: tuple[int, ...]) -> nn.Module:
    if model.arch == "dcgan":
        return DCGANDiscriminator(model, shape)
    return Discriminator(model, math.prod(shape))


def check(model: ModelConfig, shape: tuple[int, ...]) -> None:
    """ConfigError for an architecture that cannot take samples of `shape`."""
    if model.arch != "dcgan":
        return
    widths(model, shape)
    if model.d.features != "samples":
        raise ConfigError(
            f"model.d.features={model.d.features}: DCGAN's D reads images; use "
            "model.d.features=samples with model.arch=dcgan"
        )
