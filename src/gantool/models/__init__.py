"""The MLP generator and discriminator, built from their config."""

from gantool.models.mlp import (
    Discriminator,
    Generator,
    generate,
    row_classes,
    sample_latent,
    split_classes,
    with_classes,
)

__all__ = [
    "Discriminator",
    "Generator",
    "generate",
    "row_classes",
    "sample_latent",
    "split_classes",
    "with_classes",
]
