"""gantool: a configurable command-line GAN trainer on PyTorch and Hydra."""

__version__ = "0.2.0"
