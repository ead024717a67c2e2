"""MNIST from its IDX files, decoded once into a tensor on the training device.

Files are looked up where torchvision keeps them, ``ROOT/MNIST/raw``, gzipped or not, and
read as they are: nothing is written into ROOT unless a download is needed and allowed.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import torch

from gantool.config import MnistConfig
from gantool.errors import GantoolError

log = logging.getLogger(__name__)

PREFIX = {"train": "train", "test": "t10k"}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # IDX magic numbers: 0x0803 (ubyte, 3 dims), 0x0801


def raw_folder(root: str | Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def file_names(split: str) -> tuple[str, str]:
    return f"{PREFIX[split]}-images-idx3-ubyte", f"{PREFIX[split]}-labels-idx1-ubyte"


def load_mnist(cfg: MnistConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 28, 28) and labels (N,), both uint8, for the configured split."""
    folder = raw_folder(cfg.root)
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


def missing_files(cfg: MnistConfig, how: str) -> GantoolError:
    names = file_names(cfg.split)
    return GantoolError(
        f"MNIST {cfg.split} split not found in {raw_folder(cfg.root).resolve()} ({how}): "
        f"expected {' and '.join(n + '[.gz]' for n in names)}. Put the files there, or point "
        "dataset.root at the folder that holds MNIST/raw."
    )


def check_files(cfg: MnistConfig) -> None:
    """Before a run starts: the split's files must be there, unless they may be downloaded."""
    if not cfg.download and not split_present(cfg.root, cfg.split):
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


def split_present(root: str | Path, split: str) -> bool:
    """Whether both IDX files of a split are under ROOT/MNIST/raw (gzipped or not)."""
    folder = raw_folder(root)
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
    from torchvision.datasets import MNIST  # slow import: only when files are missing

    log.info("Downloading MNIST into %s", raw_folder(cfg.root).resolve())
    try:
        MNIST(cfg.root, train=cfg.split == "train", download=True)
    except Exception as e:  # torchvision raises RuntimeError, URLError, OSError, ...
        log.warning("MNIST download failed: %s", str(e).splitlines()[0] if str(e) else e)


class MnistStream:
    """Batches of flattened images (B, 784) in [-1, 1], reshuffled every epoch."""

    data_dim = 28 * 28

    def __init__(self, cfg: MnistConfig, batch_size: int, seed: int, device: torch.device):
        images, _ = load_mnist(cfg)
        if len(images) < batch_size:
            raise GantoolError(
                f"trainer.batch_size={batch_size} is larger than the MNIST {cfg.split} split "
                f"({len(images)} images)"
            )
        self.images = to_model_range(images).to(device)
        self.batch_size = batch_size
        self.batches_per_epoch = len(images) // batch_size  # the last partial batch is dropped
        # The shuffle has its own generator, so data order survives resume exactly.
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.position = 0, 0
        self.order = self._shuffle()

    def _shuffle(self) -> torch.Tensor:
        return torch.randperm(len(self.images), generator=self.generator).to(self.images.device)

    def next_batch(self) -> torch.Tensor:
        if self.position + self.batch_size > len(self.order):
            self.epoch, self.position = self.epoch + 1, 0
            self.order = self._shuffle()
        idx = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return self.images.index_select(0, idx)  # (B, 784)

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "position": self.position,
            "order": self.order.cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.epoch, self.position = state["epoch"], state["position"]
        self.order = state["order"].to(self.images.device)


class Mnist:
    """The MNIST family's behaviour (see gantool.data)."""

    name = "mnist"
    data_dim = MnistStream.data_dim
    stream = MnistStream
    picture_kind = "images"  # how TensorBoard shows a sample set
    check_available = staticmethod(check_files)

    @staticmethod
    def draw(samples: torch.Tensor, cfg: MnistConfig, path: Path, title: str) -> None:
        """A grid of the digits samples (N, 784) draw."""
        from gantool.sampling import save_samples

        save_samples(samples, cfg, path, title)

    @staticmethod
    def plots(rows: list[dict], cfg: MnistConfig, folder: Path) -> None:
        """Nothing beyond the loss curves every run gets."""
