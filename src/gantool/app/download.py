"""Fetching an image set's files when they are missing and dataset.download allows it: the
MNIST-format sets, through torchvision, into ROOT/<folder>/raw, before anything else of a run
is written. A download that fails leaves no folder it made behind."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from gantool.config.datasets import MnistConfig
from gantool.core.errors import first_line
from gantool.datasets.mnist import IdxImages, missing_files, raw_folder
from gantool.datasets.registry import family

log = logging.getLogger(__name__)


def fetch_missing(ds) -> None:
    """Download the configured split of an MNIST-format set when its files are missing and
    dataset.download is true; anything else is left to the family's own check, which says
    what is missing."""
    kind = family(ds)
    if not isinstance(kind, IdxImages) or not ds.download or kind.present(ds):
        return
    made = _missing_folders(raw_folder(ds.root, ds.name))
    log.info("Downloading %s into %s", kind.label, raw_folder(ds.root, ds.name).resolve())
    why = "the download gave no files"
    try:
        _download(kind, ds)
    except Exception as e:  # torchvision raises RuntimeError, URLError, OSError, ...
        why = f"the download failed: {first_line(e)}"
    if not kind.present(ds):  # leave nothing behind but files that were there before
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
        raise missing_files(ds, why)


def _download(kind: IdxImages, ds: MnistConfig) -> None:
    # Only here: torchvision takes 3 s to import, and only a download needs it. Its class of
    # the folder's name (MNIST, FashionMNIST, KMNIST) downloads into ROOT/<its name>/raw.
    import torchvision.datasets

    dataset = getattr(torchvision.datasets, kind.folder)
    dataset(ds.root, train=ds.split == "train", download=True)


def _missing_folders(folder: Path) -> list[Path]:
    """The folders above and including `folder` that do not exist yet, outermost first."""
    missing = []
    with contextlib.suppress(OSError):
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
    return missing[::-1]
