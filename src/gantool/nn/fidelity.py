"""FID, KID, precision and recall of image sets through the torch-fidelity package, offline.

torch-fidelity (Obukhov et al.) reproduces the reference TensorFlow FID and KID numbers with a
port of the TF Inception-v3 ("inception-v3-compat"). Its weights are a 91 MB file that
torch-fidelity would download on first use; gantool never lets it: the weights come from a
file the user gives, or from torch-fidelity's own cache location when the file is already
there (`find_weights`), and torch-fidelity is always handed that path. FID and KID numbers
comparable with the literature need those real weights; any other network registered with
torch-fidelity gives its own scale (the tests use a tiny stand-in to check the code path).

torch-fidelity is an optional dependency (`pip install 'gantool[fid]'`); it is imported only
when FID or KID is asked for, since it is slow to import.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
from torch.utils.data import Dataset

from gantool.core.errors import GantoolError, first_line

INCEPTION = "inception-v3-compat"  # torch-fidelity's name for its TF-compatible Inception-v3
KID_SUBSET_SIZE = 1000  # Bińkowski et al.'s subset size, torch-fidelity's default
MIN_SAMPLES = 2  # KID's unbiased estimate divides by m (m - 1)


def _torch_fidelity():
    """The torch_fidelity module, or one line saying how to install it."""
    try:
        import torch_fidelity  # optional and slow to import: only when FID or KID is asked for
    except ImportError as e:
        raise GantoolError(
            "FID and KID need the torch-fidelity package: pip install 'gantool[fid]'"
        ) from e
    return torch_fidelity


def inception_file_name() -> str:
    """The file name torch-fidelity gives its Inception weights, taken from its download URL
    as torch.hub does (weights-inception-2015-12-05-6726825d.pth in torch-fidelity 0.4)."""
    url = _torch_fidelity().feature_extractor_inceptionv3.URL_INCEPTION_V3
    return Path(urlparse(url).path).name


def cached_weights_path() -> Path:
    """Where torch-fidelity keeps the weights it downloads: torch.hub's checkpoints folder
    ($TORCH_HOME/hub/checkpoints, by default ~/.cache/torch/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / inception_file_name()


def find_weights(path: str | Path | None, option: str = "eval.inception_weights") -> Path:
    """The Inception weights file: `path` when given, else torch-fidelity's cached copy.

    Nothing is downloaded. When the file is not there this raises a one-line GantoolError
    naming the file torch-fidelity expects, where to put it and `option` (how the caller
    spells the setting that gives a path), so that an offline machine can be set up by hand.
    """
    name = inception_file_name()
    if path is not None:
        given = Path(path).expanduser()
        if not given.is_file():
            raise GantoolError(f"{option}={path}: no such file (torch-fidelity's {name})")
        return given
    cached = cached_weights_path()
    if cached.is_file():
        return cached
    raise GantoolError(
        f"FID/KID need torch-fidelity's Inception weights {name}, and nothing is downloaded: "
        f"put the file at {cached} or give its path with {option}=PATH"
    )


class _ImageSet(Dataset):
    """uint8 images (N, C, H, W) as torch-fidelity reads a Dataset: one (3, H, W) uint8 image
    per item, grey ones repeated into RGB one at a time (no copy of the whole set)."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index].expand(3, -1, -1)


def _check_images(name: str, images: torch.Tensor) -> None:
    """uint8 (N, 1 or 3, H, W) with at least MIN_SAMPLES images, or a ValueError."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"fid_kid: {name} must be uint8 (N, 1 or 3, H, W), not "
            f"{images.dtype} {tuple(images.shape)}"
        )
    if len(images) < MIN_SAMPLES:
        raise ValueError(f"fid_kid: {name} has {len(images)} images; KID needs {MIN_SAMPLES}")


def kid_subset_size(num_real: int, num_fake: int) -> int:
    """KID's subset size: 1000, or the smaller set's size when a set has fewer images.

    torch-fidelity refuses a subset larger than either set (its issue #45). KID's estimate
    is unbiased for any subset size, so smaller subsets give the same value on average, only
    with more spread (kid_std); with subsets as large as the smaller set, every subset of it
    is the whole set and kid_std measures the other set's resampling alone."""
    return min(KID_SUBSET_SIZE, num_real, num_fake)


def _check_loadable(weights: Path | str) -> None:
    """Refuse a weights file that torch.load cannot read without running code in it:
    torch-fidelity's Inception loads its file with weights_only=False, which would."""
    try:
        torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:
        raise GantoolError(
            f"{weights}: not a weights file torch can load safely ({first_line(e)})"
        ) from e


def fid_kid(
    real: torch.Tensor,
    fake: torch.Tensor,
    weights: Path | str,
    feature_extractor: str = INCEPTION,
    seed: int = 0,
    batch_size: int = 64,
    cuda: bool | None = None,
) -> dict[str, float]:
    """FID and KID between real (N, C, H, W) and fake (M, C, H, W) uint8 images, C 1 or 3.

    The images go to torch-fidelity in memory (no files are written; its cache is off) and
    through the network `feature_extractor` registered with torch-fidelity, whose weights
    file `weights` it is given (see find_weights; with the real Inception weights the numbers
    are the literature's FID and KID, others give their own scale). FID is biased by the
    number of images, so compare values from equal N, M (the literature uses 50,000; with
    fewer images than the 2048 features the covariances are singular and FID is high). KID's
    subsets are sized by kid_subset_size; `seed` draws them. On CUDA when available unless
    `cuda` says otherwise; torch's global random state is left as it was.

    Precision and recall (Kynkäänniemi et al. 2019, k = 3) come from the same features.

    Returns {"fid", "kid", "kid_std", "kid_subset_size", "precision", "recall"}.
    """
    _check_images("real", real)
    _check_images("fake", fake)
    fidelity = _torch_fidelity()
    _check_loadable(weights)
    subset_size = kid_subset_size(len(real), len(fake))
    try:
        with torch.random.fork_rng(devices=[]):  # its DataLoader draws a seed from torch's RNG
            metrics = fidelity.calculate_metrics(
                input1=_ImageSet(real.cpu()),
                input2=_ImageSet(fake.cpu()),
                fid=True,
                kid=True,
                prc=True,  # in the same network's features (its default layer for PRC)
                feature_extractor=feature_extractor,
                feature_extractor_weights_path=str(weights),
                kid_subset_size=subset_size,
                rng_seed=seed,
                batch_size=batch_size,
                cuda=torch.cuda.is_available() if cuda is None else cuda,
                cache=False,  # never write feature files under ~/.cache
                save_cpu_ram=True,  # read the tensors in this process: no DataLoader workers
                verbose=False,
            )
    except ValueError as e:  # torch-fidelity's own checks (vassert) raise ValueError
        raise GantoolError(f"torch-fidelity: {first_line(e)}") from e
    return {
        "fid": float(metrics[fidelity.KEY_METRIC_FID]),
        "kid": float(metrics[fidelity.KEY_METRIC_KID_MEAN]),
        "kid_std": float(metrics[fidelity.KEY_METRIC_KID_STD]),
        "kid_subset_size": float(subset_size),
        "precision": float(metrics[fidelity.KEY_METRIC_PRECISION]),
        "recall": float(metrics[fidelity.KEY_METRIC_RECALL]),
    }
