"""The one registry of dataset families, and the checks of a whole config that need them.

`load_config` and `to_config` are what every command uses: Hydra's composition and the
schemas' type and range checks (gantool.config), then what only this layer knows: the
family's own checks (its files), and the choice of loss (gantool.nn.losses).
"""

from __future__ import annotations

import logging
import time

import torch
from omegaconf import DictConfig
from torch import nn

from gantool.config.checks import check_conditional, choice, waits_for_data
from gantool.config.compose import compose, typed
from gantool.config.datasets import SCHEMAS
from gantool.config.schema import Config
from gantool.core.errors import ConfigError, GantoolError
from gantool.datasets.family import Family, Stream
from gantool.datasets.gaussian import GAUSSIAN
from gantool.datasets.images import IMAGES
from gantool.datasets.mixture import MIXTURE
from gantool.datasets.mnist import FASHION_MNIST, KMNIST, MNIST
from gantool.datasets.vectors import VECTORS
from gantool.nn import nets
from gantool.nn.lenet import RECIPE, Recipe
from gantool.nn.losses import LOSSES

log = logging.getLogger(__name__)

# Every family, by the option of the `dataset` group it answers to.
FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (GAUSSIAN, MNIST, FASHION_MNIST, KMNIST, MIXTURE, VECTORS, IMAGES)
}
if FAMILIES.keys() != SCHEMAS.keys():  # a schema without a family, or a family without one
    raise ImportError(f"dataset families {sorted(FAMILIES)} differ from schemas {sorted(SCHEMAS)}")


def family(ds) -> Family:
    """The family of a dataset config (any schema in gantool.config.datasets)."""
    return FAMILIES[ds.name]


def load_config(overrides: list[str]) -> Config:
    """Compose `configs/train.yaml` with overrides, as `gantool train` does, and check it all.

    Every mistake, Hydra's included, comes out as a ConfigError with a one-line message."""
    return check(typed(compose(overrides)))


def to_config(cfg: DictConfig | dict) -> Config:
    """A composed config, or a checkpoint's plain dict, as a checked Config."""
    return check(typed(cfg))


def check(cfg: Config) -> Config:
    """The checks a typed, range-checked config still needs: the loss is one gantool has and
    fits D, and the dataset family's own (the user's vectors: the file, read and recorded)."""
    choice("loss.name", cfg.loss.name, tuple(LOSSES))
    if cfg.model.d.features == "moments" and LOSSES[cfg.loss.name].needs_samples:
        raise ConfigError(
            f"loss={cfg.loss.name}: its gradient penalty is taken per sample; "
            "model.d.features=moments gives one output per batch"
        )
    waiting = cfg.model.conditional and waits_for_data(cfg.dataset)
    kind = family(cfg.dataset)
    kind.complete(cfg.dataset)
    if waiting:  # the classes are known now
        check_conditional(cfg)
    shape = kind.sample_shape(cfg.dataset)
    nets.check(cfg.model, shape)
    if cfg.trainer.augment != "none" and len(shape) != 3:
        raise ConfigError(
            f"trainer.augment={cfg.trainer.augment}: augmentation transforms images; the "
            f"{cfg.dataset.name} dataset's samples are vectors"
        )
    return cfg


def batch_rows(cfg: Config) -> int:
    """The rows of one training batch: trainer.batch_size packs of model.d.pack samples."""
    return cfg.trainer.batch_size * cfg.model.d.pack


def batches_per_epoch(cfg: Config, epoch_size: int | None) -> int | None:
    """Batches in an epoch of `epoch_size` rows (None: an endless stream)."""
    return None if epoch_size is None else epoch_size // batch_rows(cfg)


def check_batch(cfg: Config) -> None:
    """A batch larger than a finite training set is a bad setting: refused before a run
    starts (it needs the data's size: files are read for it)."""
    rows = family(cfg.dataset).epoch_size(cfg.dataset)
    if rows is not None and batch_rows(cfg) > rows:
        t, pack = cfg.trainer, cfg.model.d.pack
        packed = f" x model.d.pack={pack} samples" if pack > 1 else ""
        raise ConfigError(
            f"trainer.batch_size={t.batch_size}{packed} is larger than the training set "
            f"({rows:,} rows): use trainer.batch_size={rows // pack} or less"
        )


def training_stream(cfg: Config, device: torch.device, seed: int | None = None) -> Stream:
    """The stream a run of the whole config `cfg` trains on: batches of batch_rows(cfg),
    labelled when the model is conditional; the run's seed unless `seed` is given."""
    t, pack = cfg.trainer, cfg.model.d.pack
    seed = t.seed if seed is None else seed
    try:
        return family(cfg.dataset).stream(
            cfg.dataset, batch_rows(cfg), seed, device, labels=cfg.model.conditional
        )
    except GantoolError as e:  # a batch too large for the data: say where its size came from
        if pack == 1:
            raise
        raise GantoolError(
            f"{e} (with model.d.pack={pack}, a batch holds trainer.batch_size={t.batch_size} "
            f"x {pack} samples)"
        ) from e


def evaluate(
    cfg: Config,
    generator: nn.Module,
    device: torch.device,
    num: int,
    seed: int = 0,
    recipe: Recipe = RECIPE,
) -> dict:
    """Score `num` samples of `generator` against cfg.dataset; a flat dict of JSON values.

    G's noise comes from torch.Generator(device).manual_seed(seed) and every other draw from
    generators of its own, so evaluating does not move the training RNG. `recipe` is the
    LeNet's (the image sets only); tests shrink it.
    """
    if num < 1:
        raise GantoolError(f"cannot evaluate on {num} samples: need at least 1")
    started = time.perf_counter()
    result = family(cfg.dataset).evaluate(cfg, generator, device, num, seed, recipe)
    log.info(
        "Evaluated %d samples in %.1f s", result["eval/num_samples"], time.perf_counter() - started
    )
    return result
