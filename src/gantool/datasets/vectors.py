"""The user's own vectors: N rows of F numbers from a .npy or .csv file, reshuffled each epoch.

The file is read once per process (cached by path, size and modification time) and checked
row by row: a file that cannot be trained on is one line naming it and the problem. When the
config is checked at start, the data's record goes into it (see VectorsConfig): the feature
names, each feature's mean and std, and a digest of the numbers. G learns standardised
values, (x - mean) / std, unless `dataset.standardize=false`; pictures, sample files and the
evaluation are in the data's units, converted with the recorded mean and std, so a later
`gantool sample` needs neither the file nor its unchanged contents.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

import numpy as np
import torch
from torch import nn

from gantool.config.datasets import VectorsConfig
from gantool.config.schema import Config
from gantool.core.errors import ConfigError, GantoolError
from gantool.datasets import floor
from gantool.datasets.epochs import Epochs
from gantool.datasets.family import Family
from gantool.nn.metrics import (
    frechet_gaussians,
    gaussian_fit,
    ks_per_feature,
    precision_recall,
    wasserstein1_per_feature,
)
from gantool.nn.mlp import generate, seeded_latent
from gantool.plots.samples import vectors_picture
from gantool.plots.training import moments_over_training

log = logging.getLogger(__name__)

SUFFIXES = (".npy", ".csv")
MIN_ROWS = 2  # a mean and a spread need two rows


# --- reading a file ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Table:
    """A file's numbers (N, F) as float64 (read-only) and a name for each feature."""

    data: np.ndarray
    features: tuple[str, ...]


def read_table(path: str | Path) -> Table:
    """The numbers of a .npy or .csv file, checked: at least 2 rows and 1 feature, every value
    a finite number. Anything else raises GantoolError naming the file and the problem (with
    its line for a CSV file). Cached: a file is parsed once per process until it changes."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{path}: expected a .npy or .csv file of numbers (N rows, F features)")
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise GantoolError(f"{path}: no such file ({_where(path)})") from None
    except OSError as e:
        raise GantoolError(f"{path}: cannot read it: {e.strerror or e}") from e
    if path.is_dir():
        raise GantoolError(f"{path} is a folder: name the .npy or .csv file inside it")
    if not S_ISREG(stat.st_mode):  # a FIFO or a device would block, or never end
        raise GantoolError(f"{path} is not a regular file: name a .npy or .csv file")
    return _read_cached(str(path.resolve()), suffix, stat.st_size, stat.st_mtime_ns, str(path))


def _where(path: Path) -> str:
    if path.is_absolute():
        return "looked for it there"
    return f"a relative path starts in the current folder, {Path.cwd()}"


@functools.lru_cache(maxsize=4)
def _read_cached(resolved: str, suffix: str, size: int, mtime_ns: int, shown: str) -> Table:
    """size and mtime_ns are in the key so that a changed file is read again."""
    path = Path(resolved)
    try:
        data, features = _read_npy(path) if suffix == ".npy" else _read_csv(path)
    except _Problem as e:
        raise GantoolError(f"{shown}: {e}") from None
    except OSError as e:
        raise GantoolError(f"{shown}: cannot read it: {e.strerror or e}") from e
    if data.shape[0] < MIN_ROWS:
        what = "no rows" if data.shape[0] == 0 else "one row"
        raise GantoolError(f"{shown} holds {what} of numbers: a GAN needs at least {MIN_ROWS}")
    data.flags.writeable = False  # shared by every caller of the cache
    return Table(data, tuple(features))


class _Problem(Exception):
    """What is wrong with a file, said without its name."""


NPY_MAGIC = b"\x93NUMPY"


def _read_npy(path: Path) -> tuple[np.ndarray, list[str]]:
    with path.open("rb") as f:
        if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise _Problem("not a .npy file (it does not start with NumPy's magic bytes)")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as e:  # an array of Python objects, or a damaged header
        reason = "it holds Python objects" if "allow_pickle" in str(e) else "its header is damaged"
        raise _Problem(f"cannot load it as numbers: {reason}") from e
    except EOFError as e:
        raise _Problem("cannot load it: the file is cut short") from e
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise _Problem(f"holds {kind} values: expected real numbers (N rows, F features)")
    if array.ndim == 1:  # N values: one feature
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] == 0:
        raise _Problem(f"holds an array of shape {array.shape}: expected N rows of F numbers")
    data = np.array(array, dtype=np.float64)
    bad = np.argwhere(~np.isfinite(data))
    if len(bad):
        row, col = bad[0]
        raise _Problem(
            f"row {row + 1}, feature {col + 1} is {data[row, col]}: every value must be a "
            f"finite number ({len(bad)} of {data.size} are not)"
        )
    return data, [f"x{i + 1}" for i in range(data.shape[1])]


def _read_csv(path: Path) -> tuple[np.ndarray, list[str]]:
    """Comma-separated numbers, one row a line; the first line is a header of names when
    none of its fields is a number. Blank lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: drops a byte-order mark
    except UnicodeDecodeError as e:
        raise _Problem(f"not a text file (byte {e.start} is not UTF-8)") from e
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip()), None)
    if start is None:
        raise _Problem("the file is empty: expected rows of comma-separated numbers")
    first = _fields(lines[start])
    numeric = [_number(f) is not None for f in first]
    if all(numeric):
        features, body = [f"x{i + 1}" for i in range(len(first))], start
    elif not any(numeric):
        features, body = [f.strip() or f"x{i + 1}" for i, f in enumerate(first)], start + 1
    else:
        raise _Problem(
            f"line {start + 1} mixes names and numbers: a header line holds only names, "
            "a data line only numbers"
        )
    # The fast path: numpy's parser; on any complaint the slow scan below finds the first
    # problem and names its line, or accepts what numpy would not (spaces, quotes).
    rows = [line for line in lines[body:] if line.strip()]
    if not rows:
        return np.zeros((0, len(features))), features
    try:
        data = np.loadtxt(
            rows, delimiter=",", quotechar='"', comments=None, dtype=np.float64, ndmin=2
        )
        if data.shape[1] != len(features) or not np.isfinite(data).all():
            raise ValueError
    except ValueError:
        data = _scan(lines, body, len(features), start)
    return data, features


def _fields(line: str) -> list[str]:
    return next(csv.reader([line], skipinitialspace=True))


def _number(field: str) -> float | None:
    try:
        return float(field)
    except ValueError:
        return None


def _scan(lines: list[str], body: int, width: int, first: int) -> np.ndarray:
    """Parse the data lines one by one and raise _Problem at the first bad one."""
    values = []
    for i in range(body, len(lines)):
        if not lines[i].strip():
            continue
        line, fields = i + 1, _fields(lines[i])
        if len(fields) != width:
            raise _Problem(
                f"line {line} has {len(fields)} values, line {first + 1} has {width}: every "
                "row needs the same number of comma-separated values"
            )
        row = []
        for col, field in enumerate(fields, start=1):
            if not field.strip():
                raise _Problem(f"line {line}, column {col} is empty: fill it in or drop the row")
            value = _number(field)
            if value is None:
                raise _Problem(f"line {line}, column {col}: {field.strip()!r} is not a number")
            if not math.isfinite(value):
                raise _Problem(
                    f"line {line}, column {col} is {field.strip()}: every value must be a "
                    "finite number"
                )
            row.append(value)
        values.append(row)
    return np.array(values, dtype=np.float64).reshape(len(values), width)


# --- the record: what a run keeps of its data -----------------------------------------------------
def record(cfg: VectorsConfig) -> None:
    """Fill in cfg's record from its file: feature names, each feature's mean and std
    (population), and a digest of the numbers. Raises GantoolError for a file that cannot be
    trained on."""
    table = read_table(cfg.path)
    cfg.features = list(table.features)
    cfg.mean = table.data.mean(axis=0).tolist()
    cfg.std = table.data.std(axis=0).tolist()
    cfg.digest = digest(table.data)


def digest(data: np.ndarray) -> str:
    """A short fingerprint of the numbers (N, F) themselves, not of the file's bytes: the
    same numbers in a .npy or a .csv file have the same digest."""
    h = hashlib.sha256(np.asarray(data.shape, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(data, dtype="<f8").tobytes())
    return h.hexdigest()[:16]


def scale(cfg: VectorsConfig) -> np.ndarray:
    """Each feature's std, 1 for a constant feature: the divisor of standardisation."""
    std = np.asarray(cfg.std, dtype=np.float64)
    return np.where(std > 0, std, 1.0)


def to_model(data: np.ndarray, cfg: VectorsConfig) -> np.ndarray:
    """Data (N, F) in its units -> what G learns: standardised, unless standardize=false."""
    if not cfg.standardize:
        return data
    return (data - np.asarray(cfg.mean)) / scale(cfg)


def to_units(samples: torch.Tensor, cfg: VectorsConfig) -> torch.Tensor:
    """G's outputs (N, F) -> the data's units, float64 on the CPU."""
    x = samples.detach().cpu().double()
    if not cfg.standardize:
        return x
    return x * torch.from_numpy(scale(cfg)) + torch.tensor(cfg.mean, dtype=torch.float64)


def load(cfg: VectorsConfig) -> Table:
    """cfg's file, checked to have as many features as its record."""
    table = read_table(cfg.path)
    if len(table.features) != len(cfg.features):
        raise GantoolError(
            f"{cfg.path} now has {len(table.features)} features; the run was trained on "
            f"{len(cfg.features)}"
        )
    return table


# --- the stream -----------------------------------------------------------------------------------
class VectorsStream(Epochs):
    """Batches of rows (B, F) in the model's space, reshuffled every epoch: the whole data on
    the training device, each epoch a permutation drawn from the run's own generator."""

    def __init__(self, cfg: VectorsConfig, batch_size: int, seed: int, device: torch.device):
        table = load(cfg)
        found = digest(table.data)
        if found != cfg.digest:
            raise GantoolError(
                f"{cfg.path} changed after the run's config recorded it (digest {cfg.digest}, "
                f"now {found}): start the command again"
            )
        num_rows = len(table.data)
        if num_rows < batch_size:
            raise GantoolError(
                f"trainer.batch_size={batch_size} is larger than {cfg.path} ({num_rows} rows): "
                f"set trainer.batch_size={num_rows} or less"
            )
        # np.array copies: the cached data is read-only, and torch wants writable memory.
        rows = np.array(to_model(table.data, cfg), dtype=np.float32)
        # The shuffle has its own generator, so the data order survives resume exactly.
        shuffle = torch.Generator().manual_seed(seed)
        super().__init__(torch.from_numpy(rows).to(device), batch_size, shuffle)  # (N, F)
        self.data_dim = self.rows.shape[1]


# --- evaluation -----------------------------------------------------------------------------------
def evaluate(
    cfg: Config, generator: nn.Module, device: torch.device, num: int, seed: int, recipe=None
) -> dict:
    """Fréchet distance, per-feature KS and W1, precision and recall of generated rows, each
    beside the same number for real rows against real rows (the floor, see floor.py).

    FD and W1 are in the data's units; `eval/w1_mean` is the mean over features of W1 divided
    by each feature's std, so that one wide feature does not drown the others; precision and
    recall use standardised features for the same reason.
    """
    ds = cfg.dataset
    real = torch.from_numpy(np.array(load(ds).data))  # (N, F) float64, in the data's units
    sets = floor.split(real, num, seed, ds.path, "rows")
    n, m = sets.n, sets.num_pr
    fake = to_units(generate(generator, seeded_latent(n, cfg.model, device, seed)), ds)  # (n, F)
    floor.check_finite(fake)

    ref_fit = gaussian_fit(sets.reference)
    std = torch.from_numpy(scale(ds))

    def compare(rows: torch.Tensor) -> dict[str, float]:
        ks = ks_per_feature(sets.reference, rows)  # (F,)
        w1 = wasserstein1_per_feature(sets.reference, rows)  # (F,), in the data's units
        precision, recall = precision_recall(sets.reference[:m] / std, rows[:m] / std, k=floor.PR_K)
        return {
            "fd": frechet_gaussians(*ref_fit, *gaussian_fit(rows)),
            "ks_mean": ks.mean().item(),
            "ks_max": ks.max().item(),
            "w1_mean": (w1 / std).mean().item(),
            "precision": precision,
            "recall": recall,
            "ks": ks.tolist(),
            "w1": w1.tolist(),
        }

    got, base = compare(fake), compare(sets.floor)
    return {
        "eval/num_samples": n,
        **{f"eval/{k}": got[k] for k in ("fd", "ks_mean", "ks_max", "w1_mean")},
        "eval/precision": got["precision"],
        "eval/recall": got["recall"],
        **{f"eval/{k}_real_floor": base[k] for k in ("fd", "ks_mean", "ks_max", "w1_mean")},
        "eval/precision_real": base["precision"],
        "eval/recall_real": base["recall"],
        "eval/ks_per_feature": got["ks"],
        "eval/w1_per_feature": got["w1"],
    }


def for_evaluation(ds: VectorsConfig, started: Path | None, data_root: str | None):
    """The run's dataset config with the absolute path of the file to score against, checked
    to hold the run's number of features. A relative dataset.path is relative to the folder
    the run was started in (`started`, when known); `data_root` (relative to the current
    folder) is the folder to look in instead: for a relative path, DATA_ROOT/PATH; for an
    absolute one, DATA_ROOT/its file name. A file whose numbers differ from the ones the run
    recorded is scored with a warning."""
    given = Path(ds.path)
    if data_root is not None:
        folder = Path(os.path.abspath(data_root))
        path = folder / (given.name if given.is_absolute() else given)
        source = f"--data-root {data_root}"
    else:
        folder = started or Path.cwd()
        path = Path(os.path.abspath(folder / given))  # unchanged if absolute
        source = f"the run's dataset.path={ds.path}"
        if not given.is_absolute():
            source += (
                f", from {folder} where the run was started"
                if started is not None
                else ", from the current folder: the run did not record where it started"
            )
    if not path.is_file():
        raise GantoolError(
            f"{path} not found ({source}): pass --data-root DIR, the folder that holds it"
        )
    table = load(dataclasses.replace(ds, path=str(path)))
    if digest(table.data) != ds.digest:
        log.warning(
            "warning: %s is not the data the run was trained on (its digest is %s, the run "
            "recorded %s): scoring against its numbers now",
            path,
            digest(table.data),
            ds.digest,
        )
    return dataclasses.replace(ds, path=str(path))


# --- the family -----------------------------------------------------------------------------------
class Vectors(Family):
    schema = VectorsConfig
    label = "vectors"
    # `gantool sample`: pictures, the raw formats, and enough rows for smooth histograms.
    picture_formats = (".png", ".pdf", ".svg")
    raw_formats = (".npy", ".pt", ".csv")
    default_num = 10_000

    def complete(self, ds: VectorsConfig) -> None:
        """An empty record is filled in from the file (a file that cannot be trained on is one
        line); a recorded one (a checkpoint's config) is kept as it is."""
        if not ds.recorded():
            record(ds)

    def check_available(self, ds: VectorsConfig) -> None:
        """The file was read and checked when the config was; read it again, from the cache,
        in case the config came from elsewhere."""
        load(ds)

    def describe(self, ds: VectorsConfig) -> str:
        return f"the {len(ds.features)}-feature vectors of {ds.path}"

    def sample_shape(self, ds: VectorsConfig) -> tuple[int, ...]:
        return (len(ds.features),)

    def epoch_size(self, ds: VectorsConfig) -> int | None:
        return len(load(ds).data)

    def stream(self, ds: VectorsConfig, batch_size, seed, device, labels=False) -> VectorsStream:
        return VectorsStream(ds, batch_size, seed, device)

    def evaluate(self, cfg, generator, device, num, seed, recipe=None) -> dict:
        return evaluate(cfg, generator, device, num, seed)

    def for_evaluation(self, ds: VectorsConfig, started_in, data_root) -> VectorsConfig:
        return for_evaluation(ds, started_in, data_root)

    def max_num(self, fmt: str) -> int:
        """A picture draws at most 1,000,000 rows, a file holds 10,000,000."""
        return 1_000_000 if fmt in self.picture_formats else 10_000_000

    def picture(
        self, samples: torch.Tensor, ds: VectorsConfig, fmt: str, title: str, classes=None
    ) -> bytes:
        """A pairs plot of the first features and a histogram of each feature, generated
        against the data (when ds.path can be read from here), in the data's units."""
        real, note = None, ""
        try:
            real = load(ds).data
        except GantoolError as e:
            note = f"data not drawn: {e}"
        fake = to_units(samples, ds).numpy()
        return vectors_picture(
            fake, real, ds.features, ds.mean, scale(ds), title, fmt.lstrip("."), note
        )

    def values(self, samples: torch.Tensor, ds: VectorsConfig) -> torch.Tensor:
        """G's outputs (N, F) as a file holds them: float32 (N, F) in the data's units."""
        return to_units(samples, ds).float()

    def columns(self, ds: VectorsConfig) -> list[str]:
        """A CSV file's header: the data's feature names."""
        return list(ds.features)

    def plots(self, rows: list[dict], ds: VectorsConfig) -> dict[str, bytes]:
        """The mean and std of all G's values over training, against the data's: with
        standardisation on, 0 and 1 (a constant feature: 0 and less than 1)."""
        mean, std = np.asarray(ds.mean), np.asarray(ds.std)
        if ds.standardize:
            mean, std = np.zeros_like(mean), std / scale(ds)
        # Over all values of all features: the mean of the means, and the pooled spread.
        pooled_std = math.sqrt(float(np.mean(std**2) + np.var(mean)))
        return {"moments.png": moments_over_training(rows, float(np.mean(mean)), pooled_std)}


VECTORS = Vectors()
