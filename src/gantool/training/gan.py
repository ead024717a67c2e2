"""The GAN being trained: G, D, their optimizers and the EMA generator, saved and restored
as one (the checkpoint codec puts its state under "gan")."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn

from gantool.config.schema import Config, ModelConfig, OptimizersConfig, TrainerConfig
from gantool.datasets.registry import family
from gantool.nn import nets
from gantool.nn.augment import DiffAugment
from gantool.nn.mlp import sample_latent
from gantool.nn.optim import build_optimizer
from gantool.runtime import distributed

log = logging.getLogger(__name__)


def shapes_of(cfg: Config) -> tuple[nn.Module, nn.Module]:
    """G and D as cfg builds them, on the meta device: their shapes and sizes without memory,
    and no random number drawn."""
    shape = family(cfg.dataset).sample_shape(cfg.dataset)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return nets.generator(cfg.model, shape), nets.discriminator(cfg.model, shape)


def augmenter(t: TrainerConfig, shape: tuple[int, ...]) -> DiffAugment | None:
    """What D's inputs pass through in training under trainer.augment, seeded by the run."""
    if t.augment == "none":
        return None
    return DiffAugment(t.augment_policy, shape, seed=t.seed)


# 10,000 noise samples set the EMA generator's BatchNorm statistics (see GAN.calibrate_ema).
CALIBRATION_BATCHES, CALIBRATION_BATCH_SIZE = 20, 500
CONV_CALIBRATION_BATCHES = 2  # DCGAN's: see calibrate_ema


@dataclass
class GAN:
    # Under torchrun G and D are DistributedDataParallel wrappers; checkpoints hold the modules.
    generator: nn.Module
    discriminator: nn.Module
    g_optimizer: torch.optim.Optimizer
    d_optimizer: torch.optim.Optimizer
    ema: nn.Module | None = None  # a moving average of G's weights, when trainer.ema_decay > 0
    # What D's inputs pass through first in training (trainer.augment): its own generator's
    # state is part of the GAN's, so resume draws the same augmentations.
    augment: nn.Module | None = None

    @classmethod
    def build(
        cls,
        model: ModelConfig,
        optimizer: OptimizersConfig,
        ema_decay: float,
        shape: tuple[int, ...],
        device: torch.device,
        augment: nn.Module | None = None,
    ) -> GAN:
        """G and D for samples of `shape` (the family's sample_shape)."""
        g = nets.generator(model, shape).to(device)
        d = nets.discriminator(model, shape).to(device)
        ema = copy.deepcopy(g).requires_grad_(False) if ema_decay > 0 else None
        return cls(
            distributed.wrap(g),
            distributed.wrap(d),
            build_optimizer(g.parameters(), optimizer.g),
            build_optimizer(d.parameters(), optimizer.d),
            ema,
            augment,
        )

    @property
    def sampler(self) -> nn.Module:
        """The generator to draw samples from: the moving average when there is one."""
        return self.ema if self.ema is not None else distributed.unwrap(self.generator)

    def num_parameters(self) -> int:
        nets = (self.generator, self.discriminator)
        return sum(p.numel() for net in nets for p in net.parameters())

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """ema <- decay * ema + (1 - decay) * G, for the weights. BatchNorm statistics are
        measured afresh by calibrate_ema before the EMA generator is used."""
        ema, live = list(self.ema.parameters()), list(self.generator.parameters())
        torch._foreach_lerp_(ema, live, 1 - decay)  # one call for all the weights

    @torch.no_grad()
    def calibrate_ema(self, model: ModelConfig, device: torch.device) -> None:
        """Give the EMA generator's BatchNorm layers running statistics of its own activations.

        G's statistics do not fit the averaged weights: copied over, they doubled the FLD of
        the MNIST default with EMA 0.999 (530 against 260 recalibrated). Fixed noise of its
        own, so calibrating moves no RNG and gives the same result every time. `model` says
        how G's noise is drawn.
        """
        norms = [m for m in self.ema.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the calibration batches
        noise = torch.Generator(device).manual_seed(0)
        # A convolution's BatchNorm averages over every position of its maps as well: 1,000
        # images give its smallest, 4 x 4 maps 16,000 values a channel, and cost a tenth.
        convolutional = any(isinstance(m, nn.BatchNorm2d) for m in norms)
        batches = CONV_CALIBRATION_BATCHES if convolutional else CALIBRATION_BATCHES
        for _ in range(batches):  # the EMA stays in train mode; it is never trained
            self.ema(sample_latent(CALIBRATION_BATCH_SIZE, model, device, noise))

    def state_dict(self) -> dict:
        return {
            name: distributed.unwrap(part).state_dict()
            for name in self.__dataclass_fields__
            if (part := getattr(self, name)) is not None
        }

    def load_state_dict(self, state: dict) -> None:
        for name in self.__dataclass_fields__:
            part = distributed.unwrap(getattr(self, name))
            if part is None:
                continue
            if name == "augment" and "augment" not in state:  # turned on when resuming
                continue
            if name == "ema" and "ema" not in state:  # EMA turned on when resuming
                log.info("Starting the EMA generator from the checkpoint's generator")
                part.load_state_dict(state["generator"])
                continue
            part.load_state_dict(state[name])
