"""The dataset schemas, one per option of the `dataset` group, as plain data: fields, value
ranges, and what a family promises without torch: `eval_keys`, the scalar numbers its
evaluation gives (any may be trainer.objective), `endless` (no epochs) and, for labelled sets,
`num_classes`. Their behaviour (files, streams, pictures, evaluation) belongs to the family
modules of gantool.datasets, which name their schema; SCHEMAS lists every option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

from gantool.config.checks import at_least, choice, finite, number, positive
from gantool.core.errors import ConfigError

SPLITS = ("train", "test")


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
    default_objective: ClassVar[str] = "eval/w1"

    def check(self) -> None:
        finite("dataset.mean", self.mean)
        positive("dataset.std", self.std)


@dataclass
class MnistConfig:
    """An image set in MNIST's IDX format under ROOT/<its folder>/raw (gantool.datasets.mnist):
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
    default_objective: ClassVar[str] = "eval/fld"

    def check(self) -> None:
        choice("dataset.split", self.split, SPLITS)


@dataclass
class FashionMnistConfig(MnistConfig):
    name: str = "fashion_mnist"  # ROOT/FashionMNIST/raw


@dataclass
class KmnistConfig(MnistConfig):
    name: str = "kmnist"  # ROOT/KMNIST/raw


@dataclass
class MixtureConfig:
    """A mixture of isotropic Gaussians in D dimensions (gantool.datasets.mixture): K centres of D
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
    def default_objective(self) -> str:
        """In 1-D, the W1 distance to the mixture; in more dimensions, PacGAN's reverse KL."""
        return "eval/w1" if self.dim == 1 else "eval/reverse_kl"

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
                number(f"dataset.centres[{i}][{j}]", value)
                finite(f"dataset.centres[{i}][{j}]", value)
        numbers = self.std if isinstance(self.std, list | tuple) else [self.std]
        if isinstance(self.std, list | tuple) and len(self.std) != k:
            raise ConfigError(
                f"dataset.std={self.std}: give one number, or one per component ({k})"
            )
        for i, value in enumerate(numbers):
            key = f"dataset.std[{i}]" if isinstance(self.std, list | tuple) else "dataset.std"
            number(key, value, ", or a list of one per component")
            positive(key, value)
        if self.weights is not None:
            if len(self.weights) != k:
                raise ConfigError(
                    f"dataset.weights={self.weights}: give one per component ({k}), or null "
                    "for equal weights"
                )
            for i, value in enumerate(self.weights):
                positive(f"dataset.weights[{i}]", value)
        if self.num_samples is not None:
            at_least("dataset.num_samples", self.num_samples, 1)


@dataclass
class VectorsConfig:
    """The user's own vectors (gantool.datasets.vectors): N rows of F numbers in a .npy file, or
    in a .csv file with or without a header line of names. A relative `path` starts in the
    folder the run is started in. With `standardize`, G learns each feature as
    (x - mean) / std, and its samples are turned back into the data's units.

    `features`, `mean`, `std` and `digest` are the data's record: left empty, they are filled
    in from the file when the config is checked at the start of a run (gantool.datasets reads
    and checks the file), and checkpoints keep them. Samples and evaluations then come out in
    the data's units without the file, and resume refuses a file whose numbers changed."""

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
    default_objective: ClassVar[str] = "eval/fd"

    def recorded(self) -> bool:
        """Whether the record has been filled in (by gantool.datasets.vectors)."""
        return bool(self.features or self.mean or self.std or self.digest)

    def check(self) -> None:
        """The path, and the record when there is one (a checkpoint's config): whole. An
        empty record is filled in from the file one layer up (gantool.datasets.vectors)."""
        if not self.path.strip():
            raise ConfigError("dataset.path is empty: name a .npy or .csv file of numbers")
        if not self.recorded():
            return
        num = len(self.features)
        if not (num and len(self.mean) == num and len(self.std) == num and self.digest):
            raise ConfigError(
                "dataset.features, dataset.mean, dataset.std and dataset.digest are recorded "
                f"from dataset.path when a run starts: leave them unset (got {num} features, "
                f"{len(self.mean)} means, {len(self.std)} stds)"
            )
        for i, (mean, std) in enumerate(zip(self.mean, self.std, strict=True)):
            finite(f"dataset.mean[{i}]", mean)
            at_least(f"dataset.std[{i}]", std, 0.0)


@dataclass
class ImagesConfig:
    """The user's own images (gantool.datasets.images): every PNG, JPEG, BMP or WebP file under
    `path`, searched recursively, decoded once, converted to `channels` (1, 3, or auto: 3 when
    any image has colour), resized (shorter side) and centre-cropped to `resolution` pixels,
    scaled to [-1, 1]. Images in two or more first-level subfolders and none beside them are
    labelled by their subfolder (DIR/cat/*.png, DIR/dog/*.png), so model.conditional may be set.
    A relative `path` starts in the folder the run is started in.

    `classes`, `num_images` and `digest` are the data's record (and `channels` is resolved),
    filled in when a run starts; checkpoints keep them, so samples need no files, and resume
    refuses a folder whose pixels changed."""

    name: str = "images"
    path: str = MISSING
    resolution: int = 64
    channels: Any = "auto"  # 1, 3 or auto
    classes: list[str] = field(default_factory=list)  # recorded: the subfolders, in label order
    num_images: int = 0  # recorded
    digest: str = ""  # recorded: a fingerprint of the decoded pixels (and labels)

    eval_keys: ClassVar[tuple[str, ...]] = (
        "eval/swd",
        "eval/fid",
        "eval/kid",
        "eval/precision",
        "eval/recall",
    )
    endless: ClassVar[bool] = False
    default_objective: ClassVar[str] = "eval/swd"
    CHANNELS: ClassVar[tuple[Any, ...]] = (1, 3, "auto")

    @property
    def num_classes(self) -> int:
        """Labelled (model.conditional allowed) when its images come in class subfolders."""
        return len(self.classes)

    def recorded(self) -> bool:
        return bool(self.digest)

    def check(self) -> None:
        if not str(self.path).strip():
            raise ConfigError("dataset.path is empty: name a folder of images")
        if self.channels not in self.CHANNELS or isinstance(self.channels, bool):
            raise ConfigError(
                f"dataset.channels={self.channels!r} is not a choice: expected 1, 3 or auto"
            )
        at_least("dataset.resolution", self.resolution, 8)
        if self.resolution > 1024:
            raise ConfigError(f"dataset.resolution={self.resolution}: must be <= 1024")
        if self.recorded() and (self.channels == "auto" or self.num_images < 1):
            raise ConfigError(
                "dataset.classes, dataset.num_images and dataset.digest are recorded from "
                "dataset.path when a run starts: leave them unset"
            )


# Every option of the `dataset` group, by name.
SCHEMAS = {
    "gaussian": GaussianConfig,
    "mnist": MnistConfig,
    "fashion_mnist": FashionMnistConfig,
    "kmnist": KmnistConfig,
    "mixture": MixtureConfig,
    "vectors": VectorsConfig,
    "images": ImagesConfig,
}
