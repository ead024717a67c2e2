"""Image sets in MNIST's IDX format: 28x28 greyscale images of 10 classes, decoded once into a
tensor on the training device. MNIST, Fashion-MNIST and KMNIST are one family; each option
(the family classes at the end) names its folder, its display label and its class names.

Files are looked up where torchvision keeps them, ``ROOT/<folder>/raw`` (``MNIST``,
``FashionMNIST``, ``KMNIST``: torchvision's class names), under MNIST's file names, gzipped or
not, and read as they are: nothing is written into ROOT unless a download is needed and allowed.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gantool.config import DATASET_SCHEMAS, Config, MnistConfig
from gantool.data.epochs import Epochs
from gantool.errors import GantoolError
from gantool.models.mlp import split_classes, with_classes

log = logging.getLogger(__name__)

PREFIX = {"train": "train", "test": "t10k"}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # IDX magic numbers: 0x0803 (ubyte, 3 dims), 0x0801


def image_set(name: str) -> type[Mnist]:
    """The family class of an IDX image set option (`mnist`, `fashion_mnist`, `kmnist`)."""
    return IMAGE_SETS[name]


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
    if None in paths and cfg.download:
        _download(cfg)
        paths = [_find(folder, name) for name in names]
    if None in paths:
        raise missing_files(cfg, "download failed" if cfg.download else "dataset.download=false")
    images = read_idx(paths[0], IMAGES_MAGIC)
    labels = read_idx(paths[1], LABELS_MAGIC)
    if len(images) != len(labels):
        raise GantoolError(f"{paths[0]} has {len(images)} images but {paths[1]} {len(labels)}")
    return images, labels


def read_split(
    root: str | Path, split: str, name: str = "mnist"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of a split whose files are there (load_mnist without a download)."""
    schema = DATASET_SCHEMAS[name]
    return load_mnist(schema(name=name, root=str(root), split=split, download=False))


def missing_files(cfg: MnistConfig, how: str) -> GantoolError:
    names = file_names(cfg.split)
    kind = image_set(cfg.name)
    return GantoolError(
        f"{kind.label} {cfg.split} split not found in "
        f"{raw_folder(cfg.root, cfg.name).resolve()} ({how}): expected "
        f"{' and '.join(n + '[.gz]' for n in names)}. Put the files there, or point "
        f"dataset.root at the folder that holds {kind.folder}/raw."
    )


def check_files(cfg: MnistConfig) -> None:
    """Before a run starts: the split's files must be there, unless they may be downloaded."""
    if not cfg.download and not split_present(cfg.root, cfg.split, cfg.name):
        raise missing_files(cfg, "dataset.download=false")


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


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 28, 28) -> float (N, 784) in [-1, 1], the range G's Tanh gives."""
    return images.reshape(len(images), -1).float() / 127.5 - 1.0


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


def _download(cfg: MnistConfig) -> None:
    import torchvision.datasets  # slow import: only when files are missing

    kind = image_set(cfg.name)
    log.info("Downloading %s into %s", kind.label, raw_folder(cfg.root, cfg.name).resolve())
    # torchvision's class of the folder's name (MNIST, FashionMNIST, KMNIST) downloads into
    # ROOT/<its name>/raw: the folder gantool reads.
    dataset = getattr(torchvision.datasets, kind.folder)
    try:
        dataset(cfg.root, train=cfg.split == "train", download=True)
    except Exception as e:  # torchvision raises RuntimeError, URLError, OSError, ...
        log.warning("%s download failed: %s", kind.label, str(e).splitlines()[0] if str(e) else e)


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


PR_MAX_SAMPLES = 10_000  # precision and recall use at most this many points of each set
PR_K = 3  # neighbours behind each manifold ball, as in Kynkäänniemi et al. 2019


def evaluate(
    cfg: Config, generator: nn.Module, device: torch.device, num: int, seed: int, recipe
) -> dict:
    """FLD, precision, recall and class coverage of generated images, with calibration.

    The configured split's real images are shuffled (seeded) and cut into two disjoint
    halves: the reference and the floor set. Generated samples, the floor set and as many
    uniform-noise images in [-1, 1] are each compared with the same reference, n against n,
    so the three numbers share their finite-sample bias (FLD's grows like 1/n) and a
    generator that matched the data exactly would score the floor on average. Hence
    n = min(num, half the real images): 5,000 at most on the test split, 30,000 on train.
    Precision and recall use the first min(n, 10,000) points of each set. The floor is
    higher than what an n-vs-N comparison against all real images would give.
    """
    from gantool import lenet
    from gantool.evaluate import latent
    from gantool.metrics import class_coverage, frechet_gaussians, gaussian_fit, precision_recall
    from gantool.models import generate

    ds = cfg.dataset
    kind = image_set(ds.name)
    images, _ = load_mnist(ds)
    real = to_model_range(images)  # (N, 784)
    n = min(num, len(real) // 2)
    if n <= PR_K:
        raise GantoolError(
            f"the {kind.label} {ds.split} split has {len(real)} images: evaluation needs "
            f"at least {2 * (PR_K + 1)}"
        )
    if n < num:
        log.info(
            "Scoring %d generated samples, not %d: each set is compared with a reference "
            "half of the %d real images",
            n,
            num,
            len(real),
        )
    classifier = lenet.load_classifier(ds.root, device, recipe, ds.name)

    draws = torch.Generator().manual_seed(seed)  # the halves and the noise
    order = torch.randperm(len(real), generator=draws)
    reference, floor = real[order[:n]], real[order[n : 2 * n]]
    noise = torch.rand((n, real.shape[1]), generator=draws) * 2 - 1  # (n, 784) in [-1, 1)
    z = latent(cfg, n, device, seed)  # (n, latent_dim [+ 1]): a conditional G's asked classes
    fake = generate(generator, z)  # (n, 784)
    if not torch.isfinite(fake).all():
        raise GantoolError("the generator's samples are not finite (NaN or inf): nothing to score")

    ref_features, _ = classifier.embed(reference)  # (n, F)
    ref_fit = gaussian_fit(ref_features)
    m = min(n, PR_MAX_SAMPLES)

    def compare(images: torch.Tensor) -> tuple[float, float, float, torch.Tensor]:
        features, predicted = classifier.embed(images)
        fld = frechet_gaussians(*ref_fit, *gaussian_fit(features))
        precision, recall = precision_recall(ref_features[:m], features[:m], k=PR_K)
        return fld, precision, recall, predicted

    fld, precision, recall, predicted = compare(fake)
    histogram, kl, num_covered = class_coverage(predicted, lenet.NUM_CLASSES)
    fld_floor, precision_real, recall_real, _ = compare(floor)
    fld_noise, precision_noise, recall_noise, _ = compare(noise)
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


class Mnist:
    """The MNIST-format family's behaviour (see gantool.data), for MNIST itself; the other
    image sets below differ only in their folder, label, class names and LeNet bar."""

    name = "mnist"
    label = "MNIST"  # in messages, picture titles and log lines
    folder = "MNIST"  # ROOT/MNIST/raw, and torchvision's class that downloads into it
    class_names = tuple(str(d) for d in range(10))  # of the labels 0..9
    # The LeNet's held-out accuracy below which the evaluation warns that its feature space is
    # weak. MNIST's recipe reaches 99.0% with the test split alone.
    min_accuracy = 0.97

    @staticmethod
    def data_dim(cfg) -> int:
        return MnistStream.data_dim

    stream = MnistStream
    check_available = staticmethod(check_files)
    evaluate = staticmethod(evaluate)
    for_evaluation = staticmethod(for_evaluation)

    # `gantool sample`: the picture and raw formats, and an 8x8 grid by default.
    picture_formats = (".png",)
    raw_formats = (".npy", ".pt")
    default_num = 64

    @staticmethod
    def max_num(fmt: str) -> int:
        """A picture holds a 100 x 100 grid at most; a .npy or .pt file 100,000 images."""
        return 10_000 if fmt == ".png" else 100_000

    @staticmethod
    def picture(samples: torch.Tensor, cfg: MnistConfig, fmt: str, title: str) -> bytes:
        """A grid of the images samples (N, 784) draw, as fmt (.png), titled with the set."""
        from gantool.plots import digit_grid

        title = f"{image_set(cfg.name).label}, {title}" if title else image_set(cfg.name).label
        return digit_grid(Mnist.values(samples, cfg).numpy(), title, fmt.lstrip("."))

    @staticmethod
    def values(samples: torch.Tensor, cfg: MnistConfig) -> torch.Tensor:
        """G's outputs (N, 784) in [-1, 1] as images (N, 28, 28) in [0, 1]."""
        return ((samples.reshape(-1, 28, 28) + 1) / 2).clamp(0, 1)

    @staticmethod
    def plots(rows: list[dict], cfg: MnistConfig, folder: Path) -> None:
        """Nothing beyond the loss curves every run gets."""


class FashionMnist(Mnist):
    """Zalando's Fashion-MNIST: clothing in MNIST's format and layout."""

    name = "fashion_mnist"
    label = "Fashion-MNIST"
    folder = "FashionMNIST"
    class_names = (
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
    )
    # Published LeNet-sized CNNs reach 89-91% on its test set (shirts, pullovers and coats are
    # confused with each other); the margin allows for a LeNet trained on 8,000 test images
    # when the train split is absent. Not measured on the real files here.
    min_accuracy = 0.85


class Kmnist(Mnist):
    """Kuzushiji-MNIST: ten cursive Japanese (hiragana) characters in MNIST's format."""

    name = "kmnist"
    label = "KMNIST"
    folder = "KMNIST"
    class_names = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")  # romanised
    # Its paper's 4-layer CNN reaches 95% on the test set (MNIST: 99%); the same margin as
    # Fashion-MNIST's. Not measured on the real files here.
    min_accuracy = 0.90


IMAGE_SETS = {kind.name: kind for kind in (Mnist, FashionMnist, Kmnist)}
