"""Generated samples as files, the trained generator behind them, and the `sample` command.

A sample file's extension says what it holds: a picture (an MNIST digit grid, or a Gaussian
histogram against the target density) or the samples themselves (.npy, .pt, .csv). Every
file is drawn into memory first and then written with the one atomic writer, so a command
that fails leaves no file and no folder behind.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gantool.config import Config
from gantool.errors import ConfigError, GantoolError, first_line
from gantool.outputs import write_file

if TYPE_CHECKING:  # torch is imported where samples are made: bad arguments fail at once
    import torch

    from gantool.models import Generator

log = logging.getLogger(__name__)

# What `--out` may end in for any dataset; each family accepts some of them.
SAMPLE_FORMATS = (".png", ".pdf", ".svg", ".npy", ".pt", ".csv")
SAMPLE_ACCEPTED = ".png, .npy, .pt; also .pdf, .svg, .csv for the Gaussian and vectors"
# The most samples one command draws (`gantool eval --num` too); families may allow fewer.
MAX_NUM = 10_000_000
SEED_RANGE = (0, 2**64 - 1)  # what torch.Generator.manual_seed takes


def save_samples(samples: torch.Tensor, dataset, path: Path, title: str = "") -> None:
    """Write samples (N, data_dim) as the dataset family's picture; path's extension picks the
    format (.png; also .pdf, .svg where the family draws them)."""
    write_file(path, picture(samples, dataset, path.suffix.lower(), title))


def picture(samples: torch.Tensor, dataset, fmt: str, title: str = "") -> bytes:
    """The bytes of a picture file (fmt: ".png", ".pdf" or ".svg") of samples (N, data_dim)."""
    from gantool.data import family

    return family(dataset).picture(samples.detach().float().cpu(), dataset, fmt, title)


def raw_samples(samples: torch.Tensor, dataset, fmt: str) -> bytes:
    """The bytes of a .npy, .pt or .csv file of the samples as the family gives them, float32
    (the Gaussian's values (N,); the user's vectors (N, F) in the data's units; MNIST's images
    (N, 28, 28) in [0, 1]). A CSV file has a header line of the family's column names, then
    one sample a line."""
    import torch

    from gantool.data import family

    kind = family(dataset)
    data = kind.values(samples.detach().float().cpu(), dataset)
    if fmt == ".csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(kind.columns(dataset))
        writer.writerows([f"{v:.9g}" for v in row] for row in data.reshape(len(data), -1).tolist())
        return text.getvalue().encode()
    buffer = io.BytesIO()
    if fmt == ".npy":
        np.save(buffer, data.numpy())
    else:
        torch.save(data.clone(), buffer)  # a plain tensor: torch.load(weights_only=True) reads it
    return buffer.getvalue()


def check_out(out: Path, formats: tuple[str, ...], accepted: str, example: str) -> None:
    """Refuse an output path before anything is loaded or written: a folder or an extension
    not in `formats` is a bad argument (exit 2); a path under a file is unwritable (exit 1)."""
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: give a file name, such as {out / example}")
    if out.suffix.lower() not in formats:
        raise ConfigError(f"--out {out}: the extension picks the format; accepted: {accepted}")
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise GantoolError(f"cannot write {out}: {ancestor} is a file, not a folder")


@contextlib.contextmanager
def out_of_memory_as_error(what: str) -> Iterator[None]:
    """MemoryError, or torch's allocation failures, as one line (exit 1)."""
    import torch

    try:
        yield
    except MemoryError as e:
        raise GantoolError(f"out of memory {what}: try a smaller --num") from e
    except RuntimeError as e:  # CUDA's OutOfMemoryError is one; the CPU allocator's is plain
        if not isinstance(e, torch.OutOfMemoryError) and "can't allocate memory" not in str(e):
            raise
        raise GantoolError(f"out of memory {what}: try a smaller --num") from e


@dataclass
class Trained:
    """A checkpoint's generator, ready to sample from, with where it came from."""

    checkpoint: Path
    run_dir: Path | None  # None for a loose checkpoint, outside a run's checkpoints/ folder
    step: int
    config: Config
    generator: Generator  # the EMA generator when the run kept one
    device: torch.device
    started_in: Path | None  # the folder the run was started in (None: not recorded)

    def beside_checkpoint(self, name: str) -> Path:
        """Where a loose checkpoint's outputs go: its folder, under the checkpoint's stem."""
        return self.checkpoint.with_name(f"{self.checkpoint.stem}.{name}")


def run_of(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint file belongs to (RUN_DIR/checkpoints/FILE), or None."""
    from gantool.checkpoint import checkpoint_dir

    folder = Path(os.path.abspath(checkpoint)).parent
    return folder.parent if checkpoint_dir(folder.parent) == folder else None


def load_generator(path: str | Path, device_name: str) -> Trained:
    """The generator of a checkpoint file, or of a run folder's newest checkpoint that loads.

    Reads only: a damaged newer checkpoint in a run folder is skipped with a warning, not
    renamed as resume renames it.
    """
    from gantool.checkpoint import load_checkpoint, newest_loadable
    from gantool.checkpoint import resolve_checkpoint as locate
    from gantool.config import to_config
    from gantool.data import data_dim
    from gantool.device import resolve_device
    from gantool.models import Generator

    device = resolve_device(device_name)
    path = Path(path)
    ckpt = locate(path)
    if path.is_dir():
        ckpt, state, broken = newest_loadable(path)
        if broken:  # say why the newest was passed over
            log.warning("warning: %s; using %s", broken[0][1], ckpt.name)
    else:
        state = load_checkpoint(ckpt)
    try:
        cfg = to_config(state["config"])
    except GantoolError as e:
        raise GantoolError(f"{ckpt}: its config is not one this gantool reads: {e}") from e
    G = Generator(cfg.model, data_dim(cfg.dataset))
    try:
        G.load_state_dict(state["gan"].get("ema", state["gan"]["generator"]))  # EMA if trained
    except (RuntimeError, KeyError, TypeError) as e:
        raise GantoolError(f"{ckpt}: its generator does not fit its config: {first_line(e)}") from e
    run_dir = run_of(ckpt)
    return Trained(
        ckpt, run_dir, state["step"], cfg, G.to(device), device, _started_in(state, run_dir)
    )


def _started_in(state: dict, run_dir: Path | None) -> Path | None:
    """The run's working folder, where its relative paths start: the checkpoint's
    `started_in`, else Hydra's record of it in RUN_DIR/.hydra/hydra.yaml (older checkpoints),
    else None."""
    if isinstance(state.get("started_in"), str):
        return Path(state["started_in"])
    if run_dir is not None:
        import yaml

        with contextlib.suppress(OSError, ValueError, yaml.YAMLError, AttributeError, TypeError):
            saved = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())
            cwd = saved["hydra"]["runtime"]["cwd"]
            if isinstance(cwd, str) and os.path.isabs(cwd):
                return Path(cwd)
    return None


def sample_checkpoint(
    path: str | Path,
    num: int | None,
    out: Path | None,
    seed: int,
    device_name: str,
    label: int | None = None,
) -> tuple[Trained, Path]:
    """Draw `num` samples (None: 10,000 Gaussian values or 64 digits) from a checkpoint's
    generator; write them where `out` says, in the format its extension names; return the
    generator and the one file written. A conditional generator draws class `label`, or
    without it every class in turn, in blocks (sample i is of class i * classes // num).

    Without `out`: a picture in RUN_DIR/samples/sample_step_N[_label_L].png, or beside a
    loose checkpoint as STEM.sample_step_N[_label_L].png.
    """
    if out is not None:
        check_out(out, SAMPLE_FORMATS, SAMPLE_ACCEPTED, "samples.png")
    trained = load_generator(path, device_name)
    cfg, device, step = trained.config, trained.device, trained.step
    from gantool.data import family

    kind = family(cfg.dataset)
    check_label(label, cfg.model)
    name = f"sample_step_{step:07d}{'' if label is None else f'_label_{label}'}.png"
    if out is None:
        out = (
            trained.run_dir / "samples" / name
            if trained.run_dir
            else trained.beside_checkpoint(name)
        )
    if run_of(out) is not None or (out.exists() and out.samefile(trained.checkpoint)):
        raise ConfigError(f"--out {out}: samples never go over a checkpoint or into checkpoints/")
    fmt = out.suffix.lower()
    formats = kind.picture_formats + kind.raw_formats
    if fmt not in formats:
        raise ConfigError(f"--out {out}: {kind.label} samples are written as {', '.join(formats)}")
    num = kind.default_num if num is None else num
    limit = min(MAX_NUM, kind.max_num(fmt))
    if not 1 <= num <= limit:
        more = [f for f in kind.raw_formats if kind.max_num(f) > limit]
        raise ConfigError(
            f"--num {num}: must be from 1 to {limit:,} for {kind.label} samples as {fmt}"
            + (f"; more fit in {' or '.join(more)}" if more else "")
        )
    import torch

    from gantool.models import generate, row_classes, sample_latent

    with out_of_memory_as_error(f"drawing {num:,} samples"):
        classes = row_classes(num, cfg.model.num_classes, device)
        if label is not None:
            classes = torch.full_like(classes, label)
        noise = torch.Generator(device).manual_seed(seed)
        z = sample_latent(num, cfg.model, device, noise, classes)
        samples = generate(trained.generator, z).cpu()  # (num, data_dim)
        if fmt in kind.picture_formats:
            data = picture(samples, cfg.dataset, fmt, f"step {step}")
        else:
            data = raw_samples(samples, cfg.dataset, fmt)
    write_file(out, data)
    return trained, out


def check_label(label: int | None, model) -> None:
    """`--label`: only for a conditional generator, and one of its classes."""
    if label is None:
        return
    if not model.conditional:
        raise ConfigError(
            f"--label {label}: this generator is not conditional (model.conditional=false); "
            "it draws every class at once"
        )
    if not 0 <= label < model.num_classes:
        raise ConfigError(
            f"--label {label}: this generator draws classes 0 to {model.num_classes - 1}"
        )
