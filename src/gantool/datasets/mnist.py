"""Image sets in MNIST's IDX format: 28x28 greyscale images of 10 classes, decoded once into a
tensor on the training device. MNIST, Fashion-MNIST and KMNIST are one family; each option
(the family objects at the end) names its folder, its display label and its class names.

Files are looked up where torchvision keeps them, ``ROOT/<folder>/raw`` (``MNIST``,
``FashionMNIST``, ``KMNIST``: torchvision's class names), under MNIST's file names, gzipped or
not, and read as they are. This module writes nothing: a download, when the files are missing
and dataset.download allows it, is the command's (gantool.app.download).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gantool.config.datasets import FashionMnistConfig, KmnistConfig, MnistConfig
from gantool.config.schema import Config
from gantool.core.errors import GantoolError
from gantool.datasets import floor
from gantool.datasets.epochs import Epochs
from gantool.datasets.family import Family
from gantool.nn import lenet
from gantool.nn.lenet import NUM_CLASSES, to_model_range
from gantool.nn.metrics import class_coverage, frechet_gaussians, gaussian_fit, precision_recall
from gantool.nn.mlp import generate, seeded_latent, split_classes, with_classes
from gantool.plots.samples import class_grid

PREFIX = {"train": "train", "test": "t10k"}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # IDX magic numbers: 0x0803 (ubyte, 3 dims), 0x0801


def raw_folder(root: str | Path, name: str = "mnist") -> Path:
    """Where torchvision keeps an image set's files: ROOT/MNIST/raw, ROOT/FashionMNIST/raw, ..."""
    return Path(root) / image_set(name).folder / "raw"


def file_names(split: str) -> tuple[str, str]:
    return f"{PREFIX[split]}-images-idx3-ubyte", f"{PREFIX[split]}-labels-idx1-ubyte"


def load_mnist(cfg: MnistConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 28, 28) and labels (N,), both uint8, of the configured image set and split."""
    folder = raw_folder(cfg.root, cfg.name)
    names = file_names(cfg.split)
    paths = [_find(folder, name) for name in names]
    if None in paths:
        raise missing_files(cfg, "not downloaded" if cfg.download else "dataset.download=false")
    images = read_idx(paths[0], IMAGES_MAGIC)
    labels = read_idx(paths[1], LABELS_MAGIC)
    if len(images) != len(labels):
        raise GantoolError(f"{paths[0]} has {len(images)} images but {paths[1]} {len(labels)}")
    return images, labels


def read_split(
    root: str | Path, split: str, name: str = "mnist"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of a split whose files are there (load_mnist without a download)."""
    schema = image_set(name).schema
    return load_mnist(schema(name=name, root=str(root), split=split, download=False))


def missing_files(cfg: MnistConfig, how: str) -> GantoolError:
    """The split's files are not there: where they were looked for, what would work."""
    names = file_names(cfg.split)
    kind = image_set(cfg.name)
    other = "test" if cfg.split == "train" else "train"
    if split_present(cfg.root, other, cfg.name):
        hint = f"The {other} split is there: dataset.split={other} trains on it."
    else:
        hint = (
            f"Put the files there, or point dataset.root at the folder that holds "
            f"{kind.folder}/raw."
        )
    return GantoolError(
        f"{kind.label} {cfg.split} split not found in "
        f"{raw_folder(cfg.root, cfg.name).resolve()} ({how}): expected "
        f"{' and '.join(n + '[.gz]' for n in names)}. {hint}"
    )


def read_idx(path: Path, magic: int) -> torch.Tensor:
    """Read an IDX file of unsigned bytes (gzipped or not) into a uint8 tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise GantoolError(f"cannot read {path}: {e}") from e
    found = int.from_bytes(data[0:4], "big")
    if found != magic:
        raise GantoolError(f"{path} is not an MNIST IDX file (magic {found}, expected {magic})")
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise GantoolError(f"{path} is truncated: {body.size} bytes for shape {shape}")
    return torch.from_numpy(body.reshape(shape).copy())


def split_present(root: str | Path, split: str, name: str = "mnist") -> bool:
    """Whether both IDX files of a split are in the image set's folder (gzipped or not)."""
    folder = raw_folder(root, name)
    return all(_find(folder, name) is not None for name in file_names(split))


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """Write a uint8 array as an IDX file (PATH.gz when gz), the format read_idx reads."""
    magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


class MnistStream(Epochs):
    """Batches of flattened images (B, 784) in [-1, 1], reshuffled every epoch; with `labels`,
    (B, 785): each image's class as a last column, for a conditional model."""

    data_dim = 28 * 28

    def __init__(
        self,
        cfg: MnistConfig,
        batch_size: int,
        seed: int,
        device: torch.device,
        labels: bool = False,
    ):
        images, classes = load_mnist(cfg)
        if len(images) < batch_size:
            raise GantoolError(
                f"trainer.batch_size={batch_size} is larger than the {image_set(cfg.name).label} "
                f"{cfg.split} split ({len(images)} images)"
            )
        # The shuffle has its own generator, so data order survives resume exactly.
        shuffle = torch.Generator().manual_seed(seed)
        rows = to_model_range(images)  # (N, 784)
        if labels:
            rows = with_classes(rows, classes)  # (N, 785)
        super().__init__(rows.to(device), batch_size, shuffle)


def evaluate(
    cfg: Config, generator: nn.Module, device: torch.device, num: int, seed: int, recipe
) -> dict:
    """FLD, precision, recall and class coverage of generated images, beside the same numbers
    for real images (the floor, see floor.py) and for uniform noise. n = min(num, half the
    real images): 5,000 at most on the test split, 30,000 on train. Precision and recall use
    the first min(n, 10,000) points of each set. The floor is higher than what an n-vs-N
    comparison against all real images would give."""
    ds = cfg.dataset
    kind = image_set(ds.name)
    images, _ = load_mnist(ds)
    real = to_model_range(images)  # (N, 784)
    sets = floor.split(real, num, seed, f"the {kind.label} {ds.split} split", "images", noise=True)
    n, m = sets.n, sets.num_pr
    classifier = load_classifier(ds.root, device, recipe, ds.name)
    z = seeded_latent(n, cfg.model, device, seed)  # (n, latent_dim [+ 1]): a conditional G's
    fake = generate(generator, z)  # (n, 784)
    floor.check_finite(fake)

    ref_features, _ = classifier.embed(sets.reference)  # (n, F)
    ref_fit = gaussian_fit(ref_features)

    def compare(images: torch.Tensor) -> tuple[float, float, float, torch.Tensor]:
        features, predicted = classifier.embed(images)
        fld = frechet_gaussians(*ref_fit, *gaussian_fit(features))
        precision, recall = precision_recall(ref_features[:m], features[:m], k=floor.PR_K)
        return fld, precision, recall, predicted

    fld, precision, recall, predicted = compare(fake)
    histogram, kl, num_covered = class_coverage(predicted, NUM_CLASSES)
    fld_floor, precision_real, recall_real, _ = compare(sets.floor)
    fld_noise, precision_noise, recall_noise, _ = compare(sets.noise)
    asked = {}
    if cfg.model.conditional:  # the share of samples the LeNet puts in the class asked for
        _, asked_classes = split_classes(z)
        hits = predicted.cpu() == asked_classes.cpu()
        asked = {"eval/conditional_accuracy": hits.float().mean().item()}
    return {
        "eval/num_samples": n,
        "eval/fld": fld,
        "eval/precision": precision,
        "eval/recall": recall,
        "eval/class_kl": kl,
        "eval/num_classes_covered": num_covered,
        "eval/class_histogram": histogram,
        "eval/class_names": list(kind.class_names),  # of the histogram's entries, in order
        "eval/fld_real_floor": fld_floor,
        "eval/precision_real": precision_real,
        "eval/recall_real": recall_real,
        "eval/fld_noise": fld_noise,
        "eval/precision_noise": precision_noise,
        "eval/recall_noise": recall_noise,
        "eval/classifier_accuracy": classifier.accuracy,  # on real held-out images
        "eval/feature_net": classifier.digest,  # the same digest: comparable numbers
        **asked,
    }


def for_evaluation(ds: MnistConfig, started: Path | None, data_root: str | None) -> MnistConfig:
    """The run's dataset config with the absolute root to score against, checked to hold the
    split, and no download: a relative root is relative to the folder the run was started
    in (`started`, when known), `data_root` replaces it (relative to the current folder)."""
    if data_root is not None:
        root, source = Path(os.path.abspath(data_root)), f"--data-root {data_root}"
    else:
        started_in = started or Path.cwd()
        root = Path(os.path.abspath(started_in / ds.root))  # unchanged if absolute
        source = f"the run's dataset.root={ds.root}"
        if not Path(ds.root).is_absolute():
            source += (
                f", from {started_in} where the run was started"
                if started is not None
                else ", from the current folder: the run did not record where it started"
            )
    if not split_present(root, ds.split, ds.name):
        kind = image_set(ds.name)
        expected = " and ".join(n + "[.gz]" for n in file_names(ds.split))
        raise GantoolError(
            f"{kind.label} {ds.split} split not found in {raw_folder(root, ds.name)} ({source}): "
            f"expected {expected}; pass --data-root ROOT, the folder that holds {kind.folder}/raw"
        )
    return dataclasses.replace(ds, root=str(root), download=False)


# --- the LeNet feature classifier (gantool.nn.lenet) of an image set ----------------------------
def training_data(
    root: str | Path, recipe: lenet.Recipe = lenet.RECIPE, name: str = "mnist"
) -> tuple[str, lenet.Split, lenet.Split]:
    """(training split's name, training images and labels, held-out images and labels) of the
    image set `name` (a dataset option: mnist, fashion_mnist, kmnist) under root.

    The train split when present (held out: the test split if present too), else the test
    split; with one split, a seeded random `heldout_fraction` of it is held out.
    """
    train_split = "train" if split_present(root, "train", name) else "test"
    images, labels = read_split(root, train_split, name)
    if train_split == "train" and split_present(root, "test", name):
        return train_split, (images, labels), read_split(root, "test", name)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(recipe.seed))
    num_heldout = max(1, round(recipe.heldout_fraction * len(images)))
    keep, held = order[num_heldout:], order[:num_heldout]
    return train_split, (images[keep], labels[keep]), (images[held], labels[held])


def load_classifier(
    root: str | Path,
    device: torch.device,
    recipe: lenet.Recipe = lenet.RECIPE,
    name: str = "mnist",
) -> lenet.Classifier:
    """The LeNet for the image set `name` under root: from the cache, or trained and cached."""
    kind = image_set(name)
    train_split, train, heldout = training_data(root, recipe, name)
    key = lenet.cache_key(train, heldout, recipe)
    source = f"{kind.label} {train_split}"
    net, accuracy, path = lenet.load_or_train(
        key, train, heldout, device, recipe, source, kind.min_accuracy
    )
    return lenet.Classifier(net, accuracy, train_split, len(train[0]), len(heldout[0]), path)


# --- the family --------------------------------------------------------------------------------
class IdxImages(Family):
    """The MNIST-format family: one object per image set, which differ only in their schema,
    folder, label, class names and the LeNet's bar."""

    # `gantool sample`: the picture and raw formats, and an 8x8 grid by default.
    picture_formats = (".png",)
    raw_formats = (".npy", ".pt")
    default_num = 64

    def __init__(
        self,
        schema: type[MnistConfig],
        label: str,
        folder: str,
        class_names: tuple[str, ...],
        min_accuracy: float,
    ):
        self.schema = schema
        self.label = label  # in messages, picture titles and log lines
        # ROOT/<folder>/raw, and the torchvision dataset class that downloads into it
        self.folder = folder
        self.class_names = class_names  # of the labels 0..9
        # The LeNet's held-out accuracy below which the evaluation warns that its feature
        # space is weak.
        self.min_accuracy = min_accuracy

    def present(self, ds: MnistConfig) -> bool:
        """Whether the configured split's files are there."""
        return split_present(ds.root, ds.split, ds.name)

    def check_available(self, ds: MnistConfig) -> None:
        """The split's files must be there (a download, if allowed, has run before this)."""
        if not self.present(ds):
            raise missing_files(ds, "not downloaded" if ds.download else "dataset.download=false")

    def describe(self, ds: MnistConfig) -> str:
        return f"{self.label} ({ds.split} split)"

    def sample_shape(self, ds: MnistConfig) -> tuple[int, ...]:
        return (1, 28, 28)

    def epoch_size(self, ds: MnistConfig) -> int | None:
        """The split's number of images, from its labels file's header."""
        path = _find(raw_folder(ds.root, ds.name), file_names(ds.split)[1])
        if path is None:
            raise missing_files(ds, "not downloaded" if ds.download else "dataset.download=false")
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rb") as f:
                header = f.read(8)
        except (OSError, EOFError) as e:
            raise GantoolError(f"cannot read {path}: {e}") from e
        if len(header) < 8 or int.from_bytes(header[:4], "big") != LABELS_MAGIC:
            raise GantoolError(f"{path} is not an MNIST IDX labels file")
        return int.from_bytes(header[4:8], "big")

    def stream(self, ds: MnistConfig, batch_size, seed, device, labels=False) -> MnistStream:
        return MnistStream(ds, batch_size, seed, device, labels)

    def evaluate(self, cfg, generator, device, num, seed, recipe=lenet.RECIPE) -> dict:
        return evaluate(cfg, generator, device, num, seed, recipe)

    def for_evaluation(self, ds: MnistConfig, started_in, data_root) -> MnistConfig:
        return for_evaluation(ds, started_in, data_root)

    def max_num(self, fmt: str) -> int:
        """A picture holds a 100 x 100 grid at most; a .npy or .pt file 100,000 images."""
        return 10_000 if fmt == ".png" else 100_000

    def picture(
        self, samples: torch.Tensor, ds: MnistConfig, fmt: str, title: str, classes=None
    ) -> bytes:
        """A grid of the images samples (N, 784) draw, titled with the set; by `classes`, one
        row per class, labelled with its name."""
        title = f"{self.label}, {title}" if title else self.label
        images = self.values(samples, ds).numpy()  # (N, 28, 28)
        return class_grid(images, title, fmt, classes, self.class_names)

    def values(self, samples: torch.Tensor, ds: MnistConfig) -> torch.Tensor:
        """G's outputs (N, 784) in [-1, 1] as images (N, 28, 28) in [0, 1]."""
        return ((samples.reshape(-1, 28, 28) + 1) / 2).clamp(0, 1)


MNIST = IdxImages(MnistConfig, "MNIST", "MNIST", tuple(str(d) for d in range(10)), 0.97)
# Zalando's clothing in MNIST's format. Published LeNet-sized CNNs reach 89-91% on its test set
# (shirts, pullovers and coats are confused with each other); the margin allows for a LeNet
# trained on 8,000 test images when the train split is absent. Not measured on the real files.
FASHION_MNIST = IdxImages(
    FashionMnistConfig,
    "Fashion-MNIST",
    "FashionMNIST",
    (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    0.85,
)
# Kuzushiji-MNIST: ten cursive Japanese (hiragana) characters, romanised. Its paper's 4-layer
# CNN reaches 95% on the test set (MNIST: 99%); the same margin as Fashion-MNIST's. Not
# measured on the real files.
KMNIST = IdxImages(
    KmnistConfig,
    "KMNIST",
    "KMNIST",
    ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    0.90,
)
IMAGE_SETS = {kind.name: kind for kind in (MNIST, FASHION_MNIST, KMNIST)}


def image_set(name: str) -> IdxImages:
    """The family of an IDX image set option (`mnist`, `fashion_mnist`, `kmnist`)."""
    return IMAGE_SETS[name]
