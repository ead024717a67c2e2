"""`gantool sample`: generated samples as files.

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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from gantool.core.console import console
from gantool.core.errors import ConfigError, GantoolError
from gantool.core.files import write_file
from gantool.datasets.registry import family
from gantool.nn.mlp import generate, row_classes, sample_latent
from gantool.training.checkpointer import run_of
from gantool.training.trained import Trained, load_generator

log = logging.getLogger(__name__)

# What `--out` may end in for any dataset; each family accepts some of them.
SAMPLE_FORMATS = (".png", ".pdf", ".svg", ".npy", ".pt", ".csv")
SAMPLE_ACCEPTED = ".png, .npy, .pt; also .pdf, .svg, .csv for the Gaussian and vectors"


def picture(samples: torch.Tensor, dataset, fmt: str, title: str = "", classes=None) -> bytes:
    """The bytes of a picture file (fmt: ".png", ".pdf" or ".svg") of samples (N, data_dim),
    by `classes` (N,) for a conditional generator's."""
    return family(dataset).picture(samples.detach().float().cpu(), dataset, fmt, title, classes)


def raw_samples(samples: torch.Tensor, dataset, fmt: str) -> bytes:
    """The bytes of a .npy, .pt or .csv file of the samples as the family gives them, float32
    (the Gaussian's values (N,); the user's vectors (N, F) in the data's units; MNIST's images
    (N, 28, 28) in [0, 1]). A CSV file has a header line of the family's column names, then
    one sample a line."""
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
    try:
        yield
    except MemoryError as e:
        raise GantoolError(f"out of memory {what}: try a smaller --num") from e
    except RuntimeError as e:  # CUDA's OutOfMemoryError is one; the CPU allocator's is plain
        if not isinstance(e, torch.OutOfMemoryError) and "can't allocate memory" not in str(e):
            raise
        raise GantoolError(f"out of memory {what}: try a smaller --num") from e


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
    kind = family(cfg.dataset)
    check_label(label, cfg.model)
    name = f"sample_step_{step:07d}{'' if label is None else f'_label_{label}'}.png"
    if out is None:
        out = (
            trained.run_dir / "samples" / name
            if trained.run_dir
            else trained.beside_checkpoint(name)
        )
    check_not_owned(out, trained)
    fmt = out.suffix.lower()
    formats = kind.picture_formats + kind.raw_formats
    if fmt not in formats:
        raise ConfigError(f"--out {out}: {kind.label} samples are written as {', '.join(formats)}")
    num = kind.default_num if num is None else num
    limit = kind.max_num(fmt)  # at most cli.MAX_NUM, which --num was checked against
    if not 1 <= num <= limit:
        more = [f for f in kind.raw_formats if kind.max_num(f) > limit]
        raise ConfigError(
            f"--num {num}: must be from 1 to {limit:,} for {kind.label} samples as {fmt}"
            + (f"; more fit in {' or '.join(more)}" if more else "")
        )
    with out_of_memory_as_error(f"drawing {num:,} samples"):
        classes = row_classes(num, cfg.model.num_classes, device)
        if label is not None:
            classes = torch.full_like(classes, label)
        noise = torch.Generator(device).manual_seed(seed)
        z = sample_latent(num, cfg.model, device, noise, classes)
        samples = generate(trained.generator, z).cpu()  # (num, data_dim)
        if fmt in kind.picture_formats:
            shown = classes.cpu() if cfg.model.conditional else None
            data = picture(samples, cfg.dataset, fmt, f"step {step}", shown)
        else:
            data = raw_samples(samples, cfg.dataset, fmt)
    write_file(out, data)
    return trained, out


def command(
    path: str, num: int | None, out: Path | None, seed: int, device_name: str, label: int | None
) -> None:
    """`gantool sample`: draw, write, and say what was written."""
    trained, written = sample_checkpoint(path, num, out, seed, device_name, label)
    console.print(
        f"Wrote {written} (from {trained.checkpoint}, step {trained.step})",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


def check_not_owned(out: Path, trained: Trained) -> None:
    """An output never goes over a checkpoint, into any run's checkpoints/, or onto a file of
    the run it comes from (its summary, metrics, logs, .hydra/)."""
    if run_of(out) is not None or (out.exists() and out.samefile(trained.checkpoint)):
        raise ConfigError(f"--out {out}: outputs never go over a checkpoint or into checkpoints/")
    if trained.run is not None and trained.run.owns(out):
        raise ConfigError(f"--out {out}: that is one of the run's own files; choose another name")


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
