"""The MLP generator and discriminator, built from their config."""

from gantool.models.mlp import Discriminator, Generator, generate, sample_latent

__all__ = ["Discriminator", "Generator", "generate", "sample_latent"]
