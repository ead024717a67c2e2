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

# Pointwise activations, usable after G's last layer too; maxout (hidden layers only) takes the
# largest of `pieces` linear units for each of its outputs.
POINTWISE = ("elu", "leaky_relu", "relu", "tanh", "sigmoid")
ACTIVATIONS = (*POINTWISE, "maxout")
OUT_ACTIVATIONS = ("none", *POINTWISE)
NOISES = ("uniform", "normal")
D_FEATURES = ("samples", "moments")
OPTIMIZERS = ("adam", "sgd")
LOSSES = ("bce", "hinge", "lsgan", "wgan_gp")  # gantool.losses
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
        "eval/modes",  # Gaussian mixtures: components with at least one high-quality sample
        "eval/high_quality_percent",
        "eval/conditional_accuracy",  # conditional models: samples classified as asked
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
    """An image set in MNIST's IDX format under ROOT/<its folder>/raw (gantool.data.mnist):
    MNIST itself, and the options below, which differ only in name."""

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
    num_classes: ClassVar[int] = 10  # labelled: model.conditional may be set

    def check(self) -> None:
        _choice("dataset.split", self.split, SPLITS)

    def targets(self) -> dict[str, float]:
        """None: its numbers are read beside the real-image floor and the noise point."""
        return {}


@dataclass
class FashionMnistConfig(MnistConfig):
    name: str = "fashion_mnist"  # ROOT/FashionMNIST/raw


@dataclass
class KmnistConfig(MnistConfig):
    name: str = "kmnist"  # ROOT/KMNIST/raw


@dataclass
class MixtureConfig:
    """A mixture of isotropic Gaussians in D dimensions (gantool.data.mixture): K centres of D
    coordinates each, one std for every component or one per component, and weights. With
    `num_samples` the training set is that many points drawn once and read in epochs;
    without, an endless stream of fresh draws. `dataset=gaussian` is its 1-component 1-D case,
    kept as a family of its own.

    Its evaluation keys depend on D, so `eval_keys` and `endless` are properties here."""

    name: str = "mixture"
    # K lists of D numbers. Typed list[Any]: OmegaConf's list[list[float]] refuses whole
    # numbers, like [[0, 0], [2, 2]]; check() makes sure they are numbers.
    centres: list[Any] = field(default_factory=lambda: [[-3.0], [0.0], [3.0]])
    std: Any = 0.25  # a number for every component, or a list of one per component
    weights: list[float] | None = field(default_factory=lambda: [0.25, 0.5, 0.25])  # None: equal
    num_samples: int | None = None  # a fixed training set of this many points; None: endless

    # PacGAN's mode metrics, for any D; and for D = 1 the Gaussian's, against the mixture.
    MODE_KEYS: ClassVar[tuple[str, ...]] = (
        "eval/reverse_kl",
        "eval/modes",
        "eval/high_quality_percent",
    )
    ONE_D_KEYS: ClassVar[tuple[str, ...]] = GaussianConfig.eval_keys

    @property
    def eval_keys(self) -> tuple[str, ...]:
        return self.MODE_KEYS + (self.ONE_D_KEYS if self.dim == 1 else ())

    @property
    def endless(self) -> bool:
        return self.num_samples is None

    @property
    def dim(self) -> int:
        return len(self.centres[0])

    def stds(self) -> list[float]:
        """One std per component."""
        if isinstance(self.std, list | tuple):
            return [float(s) for s in self.std]
        return [float(self.std)] * len(self.centres)

    def probabilities(self) -> list[float]:
        """The weights, normalised to sum to 1 (equal when unset)."""
        weights = self.weights or [1.0] * len(self.centres)
        total = math.fsum(weights)
        return [w / total for w in weights]

    def check(self) -> None:
        k = len(self.centres)
        if k == 0:
            raise ConfigError("dataset.centres=[]: give at least one centre, like [[0.0, 0.0]]")
        for i, centre in enumerate(self.centres):
            if not isinstance(centre, list | tuple):
                raise ConfigError(
                    f"dataset.centres[{i}]={centre!r}: each centre is a list of coordinates, "
                    "like [[0.0, 0.0], [2.0, 2.0]]"
                )
            if len(centre) != len(self.centres[0]) or not centre:
                raise ConfigError(
                    f"dataset.centres[{i}]={centre}: every centre needs the same number (>= 1) "
                    f"of coordinates as the first, {len(self.centres[0])}"
                )
            for j, value in enumerate(centre):
                _number(f"dataset.centres[{i}][{j}]", value)
                _finite(f"dataset.centres[{i}][{j}]", value)
        numbers = self.std if isinstance(self.std, list | tuple) else [self.std]
        if isinstance(self.std, list | tuple) and len(self.std) != k:
            raise ConfigError(
                f"dataset.std={self.std}: give one number, or one per component ({k})"
            )
        for i, value in enumerate(numbers):
            key = f"dataset.std[{i}]" if isinstance(self.std, list | tuple) else "dataset.std"
            _number(key, value, ", or a list of one per component")
            _positive(key, value)
        if self.weights is not None:
            if len(self.weights) != k:
                raise ConfigError(
                    f"dataset.weights={self.weights}: give one per component ({k}), or null "
                    "for equal weights"
                )
            for i, value in enumerate(self.weights):
                _positive(f"dataset.weights[{i}]", value)
        if self.num_samples is not None:
            _at_least("dataset.num_samples", self.num_samples, 1)

    def targets(self) -> dict[str, float]:
        """Reverse KL 0; for D = 1 also the mixture's own moments, and 0 KS and W1. (Modes and
        high quality are higher-is-better: see HIGHER_IS_BETTER.)"""
        if self.dim > 1:
            return {"eval/reverse_kl": 0.0}
        weights, means = self.probabilities(), [c[0] for c in self.centres]
        mean = math.fsum(w * m for w, m in zip(weights, means, strict=True))

        def central(power: int) -> float:  # E[(X - mean)^power] of the mixture
            total = 0.0
            for w, m, s in zip(weights, means, self.stds(), strict=True):
                d = m - mean
                terms = {
                    2: d**2 + s**2,
                    3: d**3 + 3 * d * s**2,
                    4: d**4 + 6 * d**2 * s**2 + 3 * s**4,
                }
                total += w * terms[power]
            return total

        variance = central(2)
        return {
            "eval/mean": mean,
            "eval/std": math.sqrt(variance),
            "eval/skewness": central(3) / variance**1.5,
            "eval/excess_kurtosis": central(4) / variance**2 - 3.0,
            "eval/ks": 0.0,
            "eval/w1": 0.0,
            "eval/reverse_kl": 0.0,
        }


@dataclass
class VectorsConfig:
    """The user's own vectors (gantool.data.vectors): N rows of F numbers in a .npy file, or
    in a .csv file with or without a header line of names. A relative `path` starts in the
    folder the run is started in. With `standardize`, G learns each feature as
    (x - mean) / std, and its samples are turned back into the data's units.

    `features`, `mean`, `std` and `digest` are the data's record: left empty, they are filled
    in from the file when the config is checked at the start of a run (which reads and checks
    the file), and checkpoints keep them. Samples and evaluations then come out in the data's
    units without the file, and resume refuses a file whose numbers changed."""

    name: str = "vectors"
    path: str = MISSING
    standardize: bool = True
    features: list[str] = field(default_factory=list)  # recorded: one name per feature
    mean: list[float] = field(default_factory=list)  # recorded: each feature's mean
    std: list[float] = field(default_factory=list)  # recorded: each feature's std (population)
    digest: str = ""  # recorded: a fingerprint of the numbers

    # G's output activation must be linear: standardised values are unbounded.
    g_out_activations: ClassVar[tuple[str, ...]] = ("none",)
    eval_keys: ClassVar[tuple[str, ...]] = (
        "eval/fd",
        "eval/ks_mean",
        "eval/ks_max",
        "eval/w1_mean",
        "eval/precision",
        "eval/recall",
    )
    endless: ClassVar[bool] = False

    def check(self) -> None:
        """The path, and the record: read from the file when empty (a file that cannot be
        trained on is one line), else checked to be whole (a checkpoint's config)."""
        if not self.path.strip():
            raise ConfigError("dataset.path is empty: name a .npy or .csv file of numbers")
        if not (self.features or self.mean or self.std or self.digest):
            from gantool.data.vectors import record

            record(self)
            return
        num = len(self.features)
        if not (num and len(self.mean) == num and len(self.std) == num and self.digest):
            raise ConfigError(
                "dataset.features, dataset.mean, dataset.std and dataset.digest are recorded "
                f"from dataset.path when a run starts: leave them unset (got {num} features, "
                f"{len(self.mean)} means, {len(self.std)} stds)"
            )
        for i, (mean, std) in enumerate(zip(self.mean, self.std, strict=True)):
            _finite(f"dataset.mean[{i}]", mean)
            _at_least(f"dataset.std[{i}]", std, 0.0)

    def targets(self) -> dict[str, float]:
        """None: its numbers are read beside the floor, real rows against real rows."""
        return {}


DATASET_SCHEMAS = {
    "gaussian": GaussianConfig,
    "mnist": MnistConfig,
    "fashion_mnist": FashionMnistConfig,
    "kmnist": KmnistConfig,
    "mixture": MixtureConfig,
    "vectors": VectorsConfig,
}


# --- model --------------------------------------------------------------------------------------
@dataclass
class GeneratorConfig:
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "relu"
    negative_slope: float = 0.2  # used by leaky_relu only
    pieces: int = 2  # used by maxout only: linear units per output
    out_activation: str = "tanh"
    bias: bool = True  # the hidden layers' Linear has a bias (the output layer always has one)
    batch_norm: bool = False
    batch_norm_momentum: float = 0.1  # PyTorch convention: weight of the new batch statistics
    batch_norm_eps: float = 1e-5
    # False: Linear -> activation -> BatchNorm (the Keras MLP GAN); True: Linear -> BatchNorm ->
    # activation (DCGAN, PacGAN).
    batch_norm_before_activation: bool = False
    dropout: float = 0.0
    # > 0: every Linear weight is drawn from N(0, init_std²) and every bias is 0; 0: PyTorch's
    # default initialisation.
    init_std: float = 0.0
    # The first hidden block has neither BatchNorm nor dropout (PyTorch-GAN's cGAN, DCGAN).
    first_block_plain: bool = False


@dataclass
class DiscriminatorConfig:
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "leaky_relu"
    negative_slope: float = 0.2
    pieces: int = 2  # maxout only
    bias: bool = True
    batch_norm: bool = False
    batch_norm_momentum: float = 0.1
    batch_norm_eps: float = 1e-5
    batch_norm_before_activation: bool = False
    dropout: float = 0.0
    init_std: float = 0.0
    first_block_plain: bool = False
    # "samples": D sees each sample; "moments": D sees the batch's mean, std, skewness and
    # excess kurtosis per feature, and gives one logit per batch (the 50-line experiment).
    features: str = "samples"
    # Divide each Linear's weight by its largest singular value (Miyato et al. 2018).
    spectral_norm: bool = False
    # PacGAN: D judges `pack` samples side by side (input pack x data_dim; hidden widths
    # unchanged). Each step then reads trainer.batch_size x pack real samples and G makes as
    # many, so D still sees trainer.batch_size packs of each. 1 is the plain D.
    pack: int = 1


@dataclass
class ModelConfig:
    latent_dim: int = 64
    noise: str = "normal"  # the distribution of G's input: normal N(0, 1) or uniform U[0, 1)
    g: GeneratorConfig = field(default_factory=GeneratorConfig)
    d: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    # Class-conditional G and D (labelled datasets: the MNIST family): each takes the class,
    # embedded in label_dim numbers and concatenated to its input (Mirza & Osindero's cGAN).
    conditional: bool = False
    num_classes: int = 10  # conditional only: the classes G can be asked for
    label_dim: int = 10  # conditional only: the size of each class's embedding


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
    # Each step updates G first, then D (PyTorch-GAN's order); with reuse_fake, D's first
    # update judges the fakes G's update made, before G moved.
    g_first: bool = False
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
    # Capture the whole step as one CUDA graph and replay it (gantool.graph): "auto" does so
    # on a CUDA device when the setup allows it, true asks for it (and logs why not when it
    # cannot), false never. Typed Any: a YAML true/false stays a bool, "auto" a string.
    cuda_graph: Any = "auto"


@dataclass
class LossConfig:
    # The adversarial loss (gantool.losses): bce, hinge, lsgan or wgan_gp.
    name: str = "bce"
    # bce only. G's loss: "non_saturating" maximises log D(G(z)), "minimax" minimises
    # log(1 - D(G(z))) as in the original paper.
    g_loss: str = "non_saturating"
    # R1 penalty weight: D's loss gains r1_gamma / 2 * E[|grad_x D(x)|²] on real x; 0 is off.
    r1_gamma: float = 0.0
    # Lazy R1 (StyleGAN2): the penalty on every r1_every-th step only, weighted r1_every times.
    r1_every: int = 1
    # wgan_gp only: λ, the weight of the gradient penalty on real/fake interpolates.
    gp_lambda: float = 10.0


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


def defaults() -> dict:
    """Every schema default but the dataset's, as plain values: what a key that a saved config
    lacks (an older gantool's) meant."""
    return OmegaConf.to_container(OmegaConf.structured(Config))


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
        _at_least(f"{key}.pieces", net.pieces, 1)
        _positive(f"{key}.batch_norm_eps", net.batch_norm_eps)
        _at_least(f"{key}.init_std", net.init_std, 0.0)
        _at_least(f"{key}.negative_slope", net.negative_slope, 0.0)
        _left_open_unit(f"{key}.batch_norm_momentum", net.batch_norm_momentum)
        _half_open_unit(f"{key}.dropout", net.dropout)
    # A dataset may allow fewer (the user's vectors: linear only).
    allowed = getattr(ds, "g_out_activations", OUT_ACTIVATIONS)
    _choice("model.g.out_activation", m.g.out_activation, allowed)
    _choice("model.d.features", m.d.features, D_FEATURES)
    _at_least("model.d.pack", m.d.pack, 1)
    if m.d.pack > 1 and m.d.features == "moments":
        raise ConfigError(
            f"model.d.pack={m.d.pack}: packing needs model.d.features=samples (moments "
            "already judge the whole batch)"
        )
    if m.conditional:
        classes = getattr(ds, "num_classes", 0)
        if not classes:
            raise ConfigError(
                f"model.conditional=true: the {ds.name} dataset has no class labels; "
                "conditional models train on the MNIST family (mnist, fashion_mnist, kmnist)"
            )
        if m.num_classes != classes:
            raise ConfigError(
                f"model.num_classes={m.num_classes}: the {ds.name} dataset has {classes} "
                "classes, and a conditional model takes them all"
            )
        _at_least("model.label_dim", m.label_dim, 1)
        for key, value, plain in (
            ("model.d.pack", m.d.pack, 1),
            ("model.d.features", m.d.features, "samples"),
        ):
            if value != plain:
                raise ConfigError(
                    f"{key}={value}: a conditional D judges single samples; use {key}={plain} "
                    "with model.conditional=true"
                )

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
    if not (isinstance(t.cuda_graph, bool) or t.cuda_graph == "auto"):
        raise ConfigError(
            f"trainer.cuda_graph={t.cuda_graph!r} is not a choice: expected auto, true or false"
        )
    _choice("trainer.objective", t.objective, ds.eval_keys)
    if not 0 <= t.seed < 2**32:  # numpy's seeds are 32-bit
        raise ConfigError(f"trainer.seed={t.seed}: must be in [0, 2**32)")
    if m.d.features == "moments" and t.batch_size < 4:
        raise ConfigError(
            f"trainer.batch_size={t.batch_size}: model.d.features=moments needs at least 4"
        )

    _choice("loss.name", cfg.loss.name, LOSSES)
    _choice("loss.g_loss", cfg.loss.g_loss, G_LOSSES)
    _at_least("loss.r1_gamma", cfg.loss.r1_gamma, 0.0)
    _at_least("loss.r1_every", cfg.loss.r1_every, 1)
    _at_least("loss.gp_lambda", cfg.loss.gp_lambda, 0.0)
    if m.d.features == "moments" and cfg.loss.name == "wgan_gp":
        raise ConfigError(
            "loss=wgan_gp: its gradient penalty is taken per sample; model.d.features=moments "
            "gives one output per batch"
        )
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


def _number(key: str, value: Any, alternative: str = "") -> None:
    """For the fields a schema cannot type (dataset.centres, dataset.std)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}={value!r}: must be a number{alternative}")


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
