"""Typed schema for every config group, its registration with Hydra, and range checks.

The YAML files under ``configs/`` hold values only; the dataclasses here give them types and
defaults, so a misspelt key or a wrong type fails when Hydra composes the config. Ranges and
choices are checked once, by :func:`to_config`, which turns the composed ``DictConfig`` into a
plain :class:`Config` that the rest of gantool uses.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gantool.errors import ConfigError, describe_config_error

ACTIVATIONS = ("elu", "leaky_relu", "relu", "tanh", "sigmoid")
OUT_ACTIVATIONS = ("none", *ACTIVATIONS)
NOISES = ("uniform", "normal")
D_FEATURES = ("samples", "moments")
OPTIMIZERS = ("adam", "sgd")
G_LOSSES = ("non_saturating", "minimax")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16")
LOGGERS = ("none", "tensorboard")
SPLITS = ("train", "test")
# Metrics where higher is better; lower is better for every other one without a target (see
# each dataset schema's `targets`).
HIGHER_IS_BETTER = frozenset(
    {
        "eval/precision",
        "eval/recall",
        "eval/num_classes_covered",
        "eval/classifier_accuracy",
        "eval/precision_real",
        "eval/recall_real",
        "eval/precision_noise",
        "eval/recall_noise",
    }
)


# --- dataset: one schema per option, told apart by `name` -------------------------------------
# Each schema also says, without torch, what its family promises: `eval_keys`, the scalar
# numbers its evaluation gives (any may be trainer.objective); `endless`, whether it has no
# epochs; `targets()`, the values a perfect generator would score where that is not simply
# the lowest or highest; and `check()`, its value ranges.
@dataclass
class GaussianConfig:
    name: str = "gaussian"
    mean: float = 4.0
    std: float = 1.25

    eval_keys: ClassVar[tuple[str, ...]] = (
        "eval/w1",
        "eval/ks",
        "eval/mean",
        "eval/std",
        "eval/skewness",
        "eval/excess_kurtosis",
    )
    endless: ClassVar[bool] = True

    def check(self) -> None:
        _finite("dataset.mean", self.mean)
        _positive("dataset.std", self.std)

    def targets(self) -> dict[str, float]:
        perfect = {"eval/skewness": 0.0, "eval/excess_kurtosis": 0.0, "eval/ks": 0.0}
        return {"eval/mean": self.mean, "eval/std": self.std, **perfect, "eval/w1": 0.0}


@dataclass
class MnistConfig:
    name: str = "mnist"
    root: str = "data"
    split: str = "train"
    download: bool = True

    eval_keys: ClassVar[tuple[str, ...]] = (
        "eval/fld",
        "eval/precision",
        "eval/recall",
        "eval/class_kl",
        "eval/num_classes_covered",
    )
    endless: ClassVar[bool] = False

    def check(self) -> None:
        _choice("dataset.split", self.split, SPLITS)

    def targets(self) -> dict[str, float]:
        """None: its numbers are read beside the real-image floor and the noise point."""
        return {}


DATASET_SCHEMAS = {"gaussian": GaussianConfig, "mnist": MnistConfig}


# --- model --------------------------------------------------------------------------------------
@dataclass
class GeneratorConfig:
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "relu"
    negative_slope: float = 0.2  # used by leaky_relu only
    out_activation: str = "tanh"
    batch_norm: bool = False
    batch_norm_momentum: float = 0.1  # PyTorch convention: weight of the new batch statistics
    dropout: float = 0.0


@dataclass
class DiscriminatorConfig:
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "leaky_relu"
    negative_slope: float = 0.2
    batch_norm: bool = False
    batch_norm_momentum: float = 0.1
    dropout: float = 0.0
    # "samples": D sees each sample; "moments": D sees the batch's mean, std, skewness and
    # excess kurtosis per feature, and gives one logit per batch (the 50-line experiment).
    features: str = "samples"


@dataclass
class ModelConfig:
    latent_dim: int = 64
    noise: str = "normal"  # the distribution of G's input: normal N(0, 1) or uniform U[0, 1)
    g: GeneratorConfig = field(default_factory=GeneratorConfig)
    d: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)


# --- optimizer ----------------------------------------------------------------------------------
@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam only
    momentum: float = 0.0  # sgd only


@dataclass
class OptimizersConfig:
    g: OptimizerConfig = field(default_factory=OptimizerConfig)
    d: OptimizerConfig = field(default_factory=OptimizerConfig)


# --- trainer, loss, device ----------------------------------------------------------------------
@dataclass
class TrainerConfig:
    # The run's length: `steps` when set, else `epochs` (finite datasets only).
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 64
    d_steps: int = 1  # D updates per step, each on a fresh real batch
    g_steps: int = 1  # G updates per step
    # The first G update reuses the last D update's fakes, G's forward pass and all, instead of
    # drawing fresh noise: one G forward fewer per step. The reference presets keep it off.
    reuse_fake: bool = False
    seed: int = 0
    log_every: int = 100
    sample_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    num_samples: int = 64  # size of the fixed noise batch behind every sample grid or histogram
    num_eval_samples: int = 100_000  # samples behind the end-of-run evaluation
    eval_at_end: bool = True  # evaluate the final generator into summary.json (`gantool eval`)
    # The evaluation number a run is judged by: returned to Hydra's sweepers, sorted on by
    # `gantool report`. One of the dataset's eval_keys.
    objective: str = "eval/w1"
    # Keep an exponential moving average of G's weights (0 turns it off); sample images, the
    # end-of-run statistics and `gantool sample` then use it.
    ema_decay: float = 0.0


@dataclass
class LossConfig:
    # BCE on logits; D learns real=1, fake=0. G's loss: "non_saturating" maximises log D(G(z)),
    # "minimax" minimises log(1 - D(G(z))) as in the original paper.
    g_loss: str = "non_saturating"
    # R1 penalty weight: D's loss gains r1_gamma / 2 * E[|grad_x D(x)|²] on real x; 0 is off.
    r1_gamma: float = 0.0


@dataclass
class DeviceConfig:
    name: str = "auto"
    # CPU threads for torch's intra-op work. 0 (auto): one thread for models under 100,000
    # parameters (the Gaussian's), whose ops are too small to share out; else torch's default.
    num_threads: int = 0
    # "bf16" runs the forward passes under bfloat16 autocast (meant for CUDA); "fp32" is plain.
    precision: str = "fp32"


@dataclass
class LoggerConfig:
    # metrics.jsonl is always written; "tensorboard" also writes RUN_DIR/tensorboard/: the
    # logged scalars and each sample picture as an image.
    name: str = "none"


@dataclass
class Config:
    dataset: Any = MISSING  # GaussianConfig or MnistConfig, chosen by the `dataset` group
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizersConfig = field(default_factory=OptimizersConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore, where the YAML files' defaults lists find them."""
    from hydra.core.config_store import ConfigStore

    # ${pid:} in the run folder's name: two runs started in the same second never share one.
    # Cached, like Hydra's ${now:}: Hydra copies the cache into each job's config, so jobs that
    # parallel launchers run in other processes still share the sweep's folder.
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)
    cs = ConfigStore.instance()
    cs.store(group="schema", name="train", node=Config)
    for name, schema in DATASET_SCHEMAS.items():
        cs.store(group="schema/dataset", name=name, node=schema)


def config_dir() -> Path:
    """The folder of YAML configs: inside the installed package, or at the top of a checkout."""
    packaged = Path(__file__).parent / "configs"
    return packaged if packaged.is_dir() else Path(__file__).parents[2] / "configs"


# --- conversion and checks ----------------------------------------------------------------------
def to_config(cfg: DictConfig | dict) -> Config:
    """Turn a composed config (or a checkpoint's plain dict) into a checked :class:`Config`."""
    try:
        if isinstance(cfg, DictConfig):  # as plain values: a typed source would keep stray keys
            cfg = OmegaConf.to_container(cfg, resolve=True)
        cfg = OmegaConf.create(cfg)
    except OmegaConfBaseException as e:  # a bad ${...} interpolation, say
        raise ConfigError(describe_config_error(e)) from e
    name = OmegaConf.select(cfg, "dataset.name")
    if name not in DATASET_SCHEMAS:
        raise ConfigError(_choice_message("dataset.name", name, tuple(DATASET_SCHEMAS)))
    # Merging into the schemas re-applies their types, so a plain dict is checked like YAML.
    try:
        schema = OmegaConf.structured(Config)
        schema.dataset = OmegaConf.structured(DATASET_SCHEMAS[name])
        OmegaConf.set_struct(schema, True)  # a key the schema lacks is an error, even `+key=`
        typed = OmegaConf.merge(schema, cfg)
        config: Config = OmegaConf.to_object(typed)
    except OmegaConfBaseException as e:
        raise ConfigError(describe_config_error(e)) from e
    validate(config)
    return config


def load_config(overrides: list[str]) -> Config:
    """Compose `configs/train.yaml` with overrides, as `gantool train` does, and check it.

    Every mistake, Hydra's included, comes out as a ConfigError with a one-line message.
    """
    from hydra import compose, initialize_config_dir

    register_configs()
    try:
        with initialize_config_dir(str(config_dir()), version_base=None):
            composed = compose("train", overrides=overrides)
    except Exception as e:  # Hydra raises its own errors, and ValueError or TypeError for some
        raise ConfigError(describe_config_error(e, overrides)) from e
    return to_config(composed)


def to_dict(config: Config) -> dict:
    """The config as plain Python values, for checkpoints and summaries."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def validate(cfg: Config) -> None:
    """Raise ConfigError naming the first key whose value is out of range or not a choice."""
    ds = cfg.dataset
    ds.check()

    m = cfg.model
    _at_least("model.latent_dim", m.latent_dim, 1)
    _choice("model.noise", m.noise, NOISES)
    for key, net in (("model.g", m.g), ("model.d", m.d)):
        for i, size in enumerate(net.hidden):
            _at_least(f"{key}.hidden[{i}]", size, 1)
        _choice(f"{key}.activation", net.activation, ACTIVATIONS)
        _at_least(f"{key}.negative_slope", net.negative_slope, 0.0)
        _left_open_unit(f"{key}.batch_norm_momentum", net.batch_norm_momentum)
        _half_open_unit(f"{key}.dropout", net.dropout)
    _choice("model.g.out_activation", m.g.out_activation, OUT_ACTIVATIONS)
    _choice("model.d.features", m.d.features, D_FEATURES)

    for key, opt in (("optimizer.g", cfg.optimizer.g), ("optimizer.d", cfg.optimizer.d)):
        _choice(f"{key}.name", opt.name, OPTIMIZERS)
        _positive(f"{key}.lr", opt.lr)
        if len(opt.betas) != 2:
            raise ConfigError(f"{key}.betas={opt.betas}: expected two values, like [0.9, 0.999]")
        for i, beta in enumerate(opt.betas):
            _half_open_unit(f"{key}.betas[{i}]", beta)
        _half_open_unit(f"{key}.momentum", opt.momentum)

    t = cfg.trainer
    if t.steps is None and t.epochs is None:
        raise ConfigError("trainer.steps and trainer.epochs are both unset: set one of them")
    if t.steps is not None:
        _at_least("trainer.steps", t.steps, 1)
    elif ds.endless:
        raise ConfigError(
            f"trainer.epochs: the {ds.name} dataset is endless; set trainer.steps instead"
        )
    else:
        _at_least("trainer.epochs", t.epochs, 1)
    for key in (
        "batch_size",
        "d_steps",
        "g_steps",
        "log_every",
        "sample_every",
        "checkpoint_every",
        "keep_checkpoints",
        "num_samples",
        "num_eval_samples",
    ):
        _at_least(f"trainer.{key}", getattr(t, key), 1)
    _half_open_unit("trainer.ema_decay", t.ema_decay)
    _choice("trainer.objective", t.objective, ds.eval_keys)
    if not 0 <= t.seed < 2**32:  # numpy's seeds are 32-bit
        raise ConfigError(f"trainer.seed={t.seed}: must be in [0, 2**32)")
    if m.d.features == "moments" and t.batch_size < 4:
        raise ConfigError(
            f"trainer.batch_size={t.batch_size}: model.d.features=moments needs at least 4"
        )

    _choice("loss.g_loss", cfg.loss.g_loss, G_LOSSES)
    _at_least("loss.r1_gamma", cfg.loss.r1_gamma, 0.0)
    _choice("device", cfg.device.name, DEVICES)
    _at_least("device.num_threads", cfg.device.num_threads, 0)
    _choice("device.precision", cfg.device.precision, PRECISIONS)
    _choice("logger", cfg.logger.name, LOGGERS)
    cores = os.cpu_count() or 1
    if cfg.device.num_threads > cores:
        raise ConfigError(
            f"device.num_threads={cfg.device.num_threads}: this machine has {cores} cores; "
            f"use 0 (torch's default) to {cores}"
        )


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(_choice_message(key, value, allowed))


def _choice_message(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    return f"{key}={value!r} is not a choice: expected one of {', '.join(allowed)}"


def _finite(key: str, value: float) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{key}={value}: must be a finite number")


def _positive(key: str, value: float) -> None:
    _finite(key, value)
    if not value > 0:
        raise ConfigError(f"{key}={value}: must be > 0")


def _at_least(key: str, value: float, low: float) -> None:
    _finite(key, value)
    if not value >= low:
        raise ConfigError(f"{key}={value}: must be >= {low}")


def run_length(trainer: TrainerConfig, batches_per_epoch: int | None) -> int:
    """The run's length in steps: trainer.steps, else its epochs of the finite dataset (each
    step uses d_steps batches). Intervals longer than the run are fine: the last step always
    logs, samples and checkpoints."""
    if trainer.steps is not None:
        return trainer.steps
    return max(1, trainer.epochs * batches_per_epoch // trainer.d_steps)


def _half_open_unit(key: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ConfigError(f"{key}={value}: must be in [0, 1)")


def _left_open_unit(key: str, value: float) -> None:
    if not 0 < value <= 1:
        raise ConfigError(f"{key}={value}: must be in (0, 1]")
