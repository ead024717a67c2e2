"""The user's own images: a folder of PNG, JPEG, BMP or WebP files, decoded once with
torchvision's decoders into one uint8 tensor (N, C, R, R), and cached.

Decoding happens when a run starts and its config is checked (`complete`): every file is
decoded (BMP, which torchvision cannot read, through Pillow), converted to the configured
channels, resized so its shorter side is R and centre-cropped to R x R. The result goes to the
cache folder (gantool.nn.lenet.cache_dir) under a key of the files' names, sizes and
modification times and the settings, so a second run on an unchanged folder starts at once.
The cache holds tensors only, read with torch.load(weights_only=True): never code.

The record the run keeps (channels, classes, image count, a digest of the decoded pixels) lets
samples and pictures be made without the folder, and makes resume refuse a folder whose
pixels changed: the same pixels give the same run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import stat
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gantool.config.datasets import ImagesConfig
from gantool.config.schema import Config
from gantool.core.console import ProgressBar
from gantool.core.errors import GantoolError
from gantool.core.files import atomic_write
from gantool.datasets import floor
from gantool.datasets.epochs import Epochs
from gantool.datasets.family import Family
from gantool.nn.fidelity import fid_kid, find_weights
from gantool.nn.lenet import cache_dir, to_model_range
from gantool.nn.mlp import generate, seeded_latent, split_classes, with_classes
from gantool.nn.swd import sliced_wasserstein
from gantool.plots.samples import class_grid
from gantool.runtime.device import free_memory

log = logging.getLogger(__name__)

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# Bump when decoding changes in a way the cache key does not show, so old caches go stale.
DECODER_VERSION = 2


@dataclass
class Listing:
    """The image files under a folder, in a fixed order, and their labels when the folder has
    class subfolders."""

    root: Path
    files: list[Path]  # sorted by their path below root
    labels: list[int] | None  # per file, an index into classes; None: unlabelled
    classes: list[str]

    def key(self, ds: ImagesConfig) -> str:
        """The cache key: every file's relative name, size and modification time, and the
        resolution. Not the channels: the cache holds RGB, converted when loaded, so a run whose
        `auto` was resolved to 1 or 3 finds the same entry."""
        h = hashlib.sha256(f"v{DECODER_VERSION} {ds.resolution}".encode())
        for path in self.files:
            info = path.stat()
            h.update(
                f"\0{path.relative_to(self.root)}\0{info.st_size}\0{info.st_mtime_ns}".encode()
            )
        h.update(repr(self.labels).encode())
        return h.hexdigest()[:24]


@dataclass
class Decoded:
    images: torch.Tensor  # (N, C, R, R) uint8
    labels: torch.Tensor | None  # (N,) int64
    classes: list[str]

    def digest(self) -> str:
        """A fingerprint of the pixels and labels: what makes two runs the same run."""
        h = hashlib.sha256(str(tuple(self.images.shape)).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        if self.labels is not None:
            h.update(self.labels.numpy().tobytes())
            h.update("\0".join(self.classes).encode())
        return h.hexdigest()[:16]


def folder_of(ds: ImagesConfig) -> Path:
    """dataset.path as a folder, or one line saying what it is instead."""
    path = Path(ds.path).expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise GantoolError(f"dataset.path={ds.path}: no such folder") from None
    except OSError as e:
        raise GantoolError(f"dataset.path={ds.path}: cannot read it ({e.strerror})") from None
    if not stat.S_ISDIR(mode):
        kind = "a file" if stat.S_ISREG(mode) else "not a folder (a FIFO, socket or device)"
        raise GantoolError(
            f"dataset.path={ds.path} is {kind}: name the folder that holds the images"
        )
    return path


def scan(ds: ImagesConfig) -> Listing:
    """Every image file under dataset.path; labels from first-level subfolders when there are
    two or more and no images lie beside them."""
    root = folder_of(ds)
    files: list[Path] = []
    skipped = 0
    for folder, dirs, names in os.walk(root, onerror=_walk_error):
        dirs.sort()
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            if path.suffix.lower() in SUFFIXES and path.is_file():
                files.append(path)
            else:
                skipped += 1
    files.sort(key=lambda p: p.relative_to(root).parts)
    if not files:
        other = f" ({skipped} other files)" if skipped else ""
        raise GantoolError(
            f"dataset.path={ds.path} holds no images{other}: gantool reads "
            f"{', '.join(SUFFIXES)} files, in the folder and its subfolders"
        )
    if len(files) < 2:
        raise GantoolError(
            f"dataset.path={ds.path} holds one image: a GAN learns a distribution from many "
            "images (hundreds at least)"
        )
    parts = [p.relative_to(root).parts for p in files]
    classes = sorted({p[0] for p in parts if len(p) > 1})
    if len(classes) < 2 or any(len(p) == 1 for p in parts):
        return Listing(root, files, None, [])
    index = {name: i for i, name in enumerate(classes)}
    return Listing(root, files, [index[p[0]] for p in parts], classes)


def _walk_error(error: OSError) -> None:
    raise GantoolError(f"cannot read {error.filename}: {error.strerror}")


def decode_file(path: Path) -> torch.Tensor:
    """One file as uint8 RGB (3, H, W): palettes expanded, CMYK converted, alpha dropped (the
    colour channels as stored), 16-bit scaled to 8. GantoolError naming the file if it cannot
    be decoded."""
    from torchvision.io import ImageReadMode, decode_image  # slow to import: decoding only

    try:
        if path.suffix.lower() == ".bmp":  # torchvision has no BMP decoder
            from PIL import Image  # BMP files only

            with Image.open(path) as im:
                return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
        encoded = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        with warnings.catch_warnings():  # 0.29 warns of a move to TorchCodec on every call
            warnings.simplefilter("ignore", DeprecationWarning)
            image = decode_image(encoded, ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError, SyntaxError) as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise GantoolError(f"cannot decode {path}: {reason[:120]}") from None
    if image.dtype == torch.uint16:  # 16-bit PNG: the nearest 8-bit value
        image = ((image.to(torch.int32) * 255 + 32767) // 65535).to(torch.uint8)
    return image


def to_channels(images: torch.Tensor, channels) -> torch.Tensor:
    """RGB images (N, 3, R, R) uint8 as `channels` channels (1, 3, or auto: 3 when any image
    has colour). Grey images keep their exact values; colour ones take ITU-R 601 luma, rounded.
    In chunks, so the float copy stays small."""
    grey = ((images[:, 0] == images[:, 1]) & (images[:, 1] == images[:, 2])).flatten(1).all(1)
    if channels == "auto":
        channels = 1 if bool(grey.all()) else 3
    if channels == 3:
        return images
    out = []
    for chunk, plain in zip(images.split(1024), grey.split(1024), strict=True):
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        luma = (chunk.float() * weights).sum(1, keepdim=True).round().clamp(0, 255)
        out.append(torch.where(plain.view(-1, 1, 1, 1), chunk[:, :1], luma.to(torch.uint8)))
    return torch.cat(out)


def fit(image: torch.Tensor, size: int) -> torch.Tensor:
    """(C, H, W) resized (antialiased) so its shorter side is `size`, centre-cropped square.
    An image already size x size is kept as it is, pixel for pixel."""
    from torchvision.transforms.v2 import functional as F  # slow to import: decoding only

    if image.shape[1:] == (size, size):
        return image
    if min(image.shape[1:]) != size:
        image = F.resize(image, size, antialias=True)
    return F.center_crop(image, [size, size])


def decode(listing: Listing, size: int) -> Decoded:
    """Decode every file as RGB at `size` px (progress on the console), refusing the folder if
    any file cannot be: a corrupt image is named, not skipped, so the set trained on is the set
    in the folder."""
    started = time.perf_counter()
    fitted: list[torch.Tensor] = []
    failures: list[str] = []
    with ProgressBar(len(listing.files), label="decoding", transient=True) as bar:
        for i, path in enumerate(listing.files):
            try:
                fitted.append(fit(decode_file(path), size))
            except GantoolError as e:
                failures.append(str(e))
            if i % 64 == 0:
                bar.update(i)
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise GantoolError(f"{failures[0]}{more}: fix or remove the file, then run again")
    labels = torch.tensor(listing.labels) if listing.labels is not None else None
    log.info(
        "Decoded %d images from %s in %.1f s (%d px; cached for the next run)",
        len(fitted),
        listing.root,
        time.perf_counter() - started,
        size,
    )
    return Decoded(torch.stack(fitted), labels, listing.classes)


def check_memory(listing: Listing, ds: ImagesConfig) -> None:
    """A folder whose decoded images cannot fit in memory: one line with the size it needs."""
    needed = len(listing.files) * 3 * ds.resolution**2 * 2  # the RGB images, and stacking
    free = free_memory(torch.device("cpu"))
    if free is not None and needed > free:
        raise GantoolError(
            f"dataset.path={ds.path}: {len(listing.files):,} images at {ds.resolution} px need "
            f"{needed / 2**30:.1f} GiB of memory to decode, and {free / 2**30:.1f} GiB is free: "
            "use a lower dataset.resolution, dataset.channels=1 or fewer images"
        )


# Decoded folders of this process, by cache key: a run's config check and its stream share one.
_decoded: dict[str, Decoded] = {}


def load(ds: ImagesConfig) -> Decoded:
    """The folder's decoded images in dataset.channels: RGB from this process's memory, the
    cache, or decoding, then converted."""
    listing = scan(ds)
    key = listing.key(ds)
    rgb = _decoded.get(key)
    if rgb is None:
        path = cache_dir() / f"images-{key}.pt"
        rgb = _read_cache(path)
        if rgb is None:
            check_memory(listing, ds)
            rgb = decode(listing, ds.resolution)
            _write_cache(path, rgb)
        _decoded.clear()  # one folder at a time
        _decoded[key] = rgb
    return Decoded(to_channels(rgb.images, ds.channels), rgb.labels, rgb.classes)


def _read_cache(path: Path) -> Decoded | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return Decoded(state["images"], state["labels"], list(state["classes"]))
    except FileNotFoundError:
        return None
    except Exception as e:
        log.warning("Decoding again: the cache %s cannot be read (%s)", path, e)
        return None


def _write_cache(path: Path, decoded: Decoded) -> None:
    state = {"images": decoded.images, "labels": decoded.labels, "classes": decoded.classes}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: torch.save(state, tmp))
    except OSError as e:  # a cache that cannot be written costs time, not the run
        log.warning("Cannot cache the decoded images in %s: %s", path, e)


class ImageStream(Epochs):
    """Batches of rows (B, C*R*R) in [-1, 1], reshuffled every epoch; with `labels`, each row
    ends in its class. The images stay uint8 on the device; a batch is converted when drawn."""

    def __init__(self, decoded: Decoded, batch_size, seed, device, labels: bool):
        images = decoded.images
        if len(images) < batch_size:
            raise GantoolError(
                f"trainer.batch_size={batch_size} is larger than the folder ({len(images)} images)"
            )
        self.data_dim = images[0].numel()
        self.labels = decoded.labels.to(device) if labels else None
        shuffle = torch.Generator().manual_seed(seed)  # the data order survives resume
        super().__init__(images.reshape(len(images), -1).to(device), batch_size, shuffle)

    def next_batch(self) -> torch.Tensor:
        idx = self.next_indices()
        rows = to_model_range(self.rows.index_select(0, idx))  # (B, C*R*R) in [-1, 1]
        if self.labels is None:
            return rows
        return with_classes(rows, self.labels.index_select(0, idx))


class ImageFolder(Family):
    schema = ImagesConfig
    label = "images"
    picture_formats = (".png",)
    raw_formats = (".npy", ".pt")
    default_num = 64

    def describe(self, ds: ImagesConfig) -> str:
        labelled = f", {len(ds.classes)} classes" if ds.classes else ""
        return (
            f"{ds.num_images:,} images from {ds.path} ({ds.resolution} px, "
            f"{ds.channels} channel(s){labelled})"
        )

    def complete(self, ds: ImagesConfig) -> None:
        """Decode (or read from the cache) and record what the folder holds, once per run."""
        if ds.recorded():
            return
        decoded = load(ds)
        ds.channels = decoded.images.shape[1]
        ds.classes = list(decoded.classes)
        ds.num_images = len(decoded.images)
        ds.digest = decoded.digest()

    def check_available(self, ds: ImagesConfig) -> None:
        folder_of(ds)

    def epoch_size(self, ds: ImagesConfig) -> int:
        return ds.num_images

    def sample_shape(self, ds: ImagesConfig) -> tuple[int, int, int]:
        if ds.channels == "auto":  # complete() resolves it before anything asks
            raise GantoolError("dataset.channels is not resolved yet: the folder was not read")
        return (int(ds.channels), ds.resolution, ds.resolution)

    def data(self, ds: ImagesConfig) -> Decoded:
        """The decoded folder, checked to be the one the run recorded."""
        decoded = load(ds)
        found = decoded.digest()
        if found != ds.digest:
            raise GantoolError(
                f"the images in {ds.path} are not the ones this run started with (their "
                f"digest is {found}, the run recorded {ds.digest}): restore the folder, or "
                "start a new run"
            )
        return decoded

    def stream(self, ds: ImagesConfig, batch_size, seed, device, labels=False) -> ImageStream:
        return ImageStream(self.data(ds), batch_size, seed, device, labels)

    def names_of_classes(self, ds: ImagesConfig) -> tuple[str, ...]:
        return tuple(ds.classes)

    def evaluate(self, cfg: Config, generator: nn.Module, device, num, seed, recipe=None) -> dict:
        return evaluate(cfg, generator, device, num, seed, self.data(cfg.dataset))

    def for_evaluation(self, ds: ImagesConfig, started_in, data_root) -> ImagesConfig:
        """The run's dataset with its folder found: relative to where the run started, or
        --data-root (the folder itself) instead."""
        if data_root is not None:
            path = os.path.abspath(data_root)
        else:
            path = os.path.abspath((started_in or Path.cwd()) / ds.path)
        return dataclasses.replace(ds, path=path)

    def max_num(self, fmt: str) -> int:
        return 10_000 if fmt == ".png" else 100_000

    def picture(self, samples, ds: ImagesConfig, fmt: str, title: str, classes=None) -> bytes:
        """A grid of the images; by `classes`, one labelled row per class."""
        name = Path(ds.path).name or "images"
        title = f"{name}, {title}" if title else name
        images = self.values(samples, ds).permute(0, 2, 3, 1).numpy()  # (N, R, R, C)
        if images.shape[-1] == 1:
            images = images[..., 0]
        return class_grid(images, title, fmt, classes, ds.classes)

    def values(self, samples: torch.Tensor, ds: ImagesConfig) -> torch.Tensor:
        """G's rows in [-1, 1] as images (N, C, R, R) in [0, 1]."""
        return ((samples.reshape(-1, *self.sample_shape(ds)) + 1) / 2).clamp(0, 1)


def evaluate(cfg: Config, generator: nn.Module, device, num: int, seed: int, data: Decoded) -> dict:
    """The sliced Wasserstein distance of generated images to a real half, beside the other
    real half's (the floor) and uniform noise's; FID, KID, precision and recall as well when
    torch-fidelity's Inception weights are at hand (eval.inception_weights)."""
    shape = tuple(data.images.shape[1:])
    real = to_model_range(data.images)
    sets = floor.split(real, num, seed, f"the {len(real)} images", "images", noise=True)
    z = seeded_latent(sets.n, cfg.model, device, seed)
    fake = generate(generator, z).float().cpu()
    floor.check_finite(fake)
    images = {"fake": fake, "floor": sets.floor, "noise": sets.noise}
    images = {name: rows.reshape(-1, *shape) for name, rows in images.items()}
    reference = sets.reference.reshape(-1, *shape)
    result: dict = {"eval/num_samples": sets.n}
    for name, batch in images.items():
        swd = sliced_wasserstein(reference, batch, seed=seed)["swd"]
        result[metric_key("swd", name)] = swd
    weights = inception_weights(cfg.eval.inception_weights)
    if weights is not None:
        for name, batch in images.items():
            scores = fid_kid(to_uint8(reference), to_uint8(batch), weights, seed=seed)
            for key in ("fid", "kid", "precision", "recall"):
                result[metric_key(key, name)] = scores[key]
    if cfg.model.conditional:
        drawn = split_classes(z)[1].bincount(minlength=len(data.classes))
        result["eval/class_names"] = list(data.classes)
        result["eval/classes_drawn"] = drawn.tolist()
    return result


def metric_key(metric: str, images: str) -> str:
    """The eval key of a metric for generated images, the real floor or noise, named as
    config.metrics names them (precision_real, as the MNIST family's; fid_real_floor)."""
    if images == "fake":
        return f"eval/{metric}"
    if images == "noise":
        return f"eval/{metric}_noise"
    return (
        f"eval/{metric}_real" if metric in ("precision", "recall") else f"eval/{metric}_real_floor"
    )


def inception_weights(path: str | None) -> Path | None:
    """The Inception weights to score with: eval.inception_weights (an error when it is
    not there), else torch-fidelity's cached file when present, else None with a line
    saying how to provide it."""
    try:
        return find_weights(path)
    except GantoolError as e:
        if path is not None:
            raise
        log.info("FID, KID, precision and recall not computed: %s", e)
        return None


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] as uint8, rounded to the nearest of the 256 levels."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


IMAGES = ImageFolder()
