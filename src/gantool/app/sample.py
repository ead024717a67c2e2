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
from gantool.nn.latent import draw_latent, walk
from gantool.nn.mlp import generate, row_classes
from gantool.plots.samples import walk_strip
from gantool.plots.training import progress_gif
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


def raw_samples(samples: torch.Tensor, dataset, fmt: str, shape: tuple[int, ...] = ()) -> bytes:
    """The bytes of a .npy, .pt or .csv file of the samples as the family gives them, float32
    (the Gaussian's values (N,); the user's vectors (N, F) in the data's units; MNIST's images
    (N, 28, 28) in [0, 1]). A CSV file has a header line of the family's column names, then
    one sample a line. `shape`: the leading dimensions the samples are gathered in (a walk's
    (paths, points)), in place of N."""
    kind = family(dataset)
    data = kind.values(samples.detach().float().cpu(), dataset)
    if shape:
        data = data.reshape(*shape, *data.shape[1:])
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
    label: int | str | None = None,
    interpolate: int | None = None,
    truncation: float | None = None,
) -> tuple[Trained, Path]:
    """Draw `num` samples (None: 10,000 Gaussian values or 64 digits) from a checkpoint's
    generator; write them where `out` says, in the format its extension names; return the
    generator and the one file written. A conditional generator draws class `label` (an index
    or a class name), or without it every class in turn, in blocks (sample i is of class
    i * classes // num). With `truncation` T every noise coordinate lies within ±T; with
    `interpolate` K, each of the `num` samples walks K points between two latents (see walk).

    Without `out`: a picture in RUN_DIR/samples/sample_step_N[_label_L].png (a walk:
    walk_step_N[...].gif), or beside a loose checkpoint as STEM.sample_step_N[...].png.
    """
    walking = interpolate is not None
    if out is not None:
        check_sample_out(out, walking)
    trained = load_generator(path, device_name)
    cfg, step = trained.config, trained.step
    kind = family(cfg.dataset)
    index = class_index(label, cfg.model, class_names(kind, cfg.dataset))
    check_truncation(truncation, cfg.model)
    if walking:
        check_images(kind, cfg.dataset, interpolate)
    if out is None:
        name = default_name(step, index, truncation, walking)
        out = (
            trained.run_dir / "samples" / name
            if trained.run_dir
            else trained.beside_checkpoint(name)
        )
    check_not_owned(out, trained)
    fmt = out.suffix.lower()
    if walking:
        every_class = cfg.model.conditional and index is None  # a strip: one row per class
        strip = cfg.model.num_classes if every_class else WALK_STRIP_NUM
        num = walk_num(num, out, interpolate, kind, strip)
    else:
        num = plain_num(num, out, kind)
    title = f"step {step}" + ("" if truncation is None else f", truncation {truncation:g}")
    with out_of_memory_as_error(f"drawing {num:,} samples"):
        latents = Latents(trained, num, seed, index, truncation)
        if walking:
            data = walk_file(trained, latents, interpolate, fmt, title)
        else:
            samples = generate(trained.generator, latents.draw()).cpu()  # (num, data_dim)
            if fmt in kind.picture_formats:
                data = picture(samples, cfg.dataset, fmt, title, latents.shown())
            else:
                data = raw_samples(samples, cfg.dataset, fmt)
    write_file(out, data)
    return trained, out


def check_sample_out(out: Path, walking: bool) -> None:
    """--out, before anything is loaded: a walk's formats, or a plain sample's (a .gif asks
    for a walk)."""
    if walking:
        check_out(out, WALK_FORMATS, WALK_ACCEPTED, "walk.gif")
    elif out.suffix.lower() == ".gif":
        raise ConfigError(f"--out {out}: a .gif is a latent walk; add --interpolate K")
    else:
        check_out(out, SAMPLE_FORMATS, SAMPLE_ACCEPTED, "samples.png")


def plain_num(num: int | None, out: Path, kind) -> int:
    """The number of samples to draw: --num, else the family's default; refused beyond what
    one file of this format holds."""
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
    return num


def default_name(step: int, index: int | None, truncation: float | None, walking: bool) -> str:
    """The picture's file name without --out: what it shows, so that pictures of one
    checkpoint with other options do not replace each other."""
    name = f"{'walk' if walking else 'sample'}_step_{step:07d}"
    name += "" if index is None else f"_label_{index}"
    name += "" if truncation is None else f"_truncation_{truncation:g}"
    return name + (".gif" if walking else ".png")


class Latents:
    """The noise of one command, from its own generator seeded by --seed: each draw continues
    the same stream, so a walk's starts are the plain samples of that seed, and its ends the
    next draw. A conditional generator's classes are --label's, or every class in turn."""

    def __init__(self, trained: Trained, num: int, seed: int, index: int | None, truncation):
        self.model, self.device, self.num = trained.config.model, trained.device, num
        self.classes = None  # an unconditional generator's noise has no class column
        if self.model.conditional:
            self.classes = row_classes(num, self.model.num_classes, self.device)
            if index is not None:
                self.classes = torch.full_like(self.classes, index)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.truncation = truncation

    def draw(self) -> torch.Tensor:
        """G's input (num, latent_dim[+1]), truncated if asked."""
        return draw_latent(
            self.num, self.model, self.device, self.generator, self.classes, self.truncation
        )

    def shown(self) -> torch.Tensor | None:
        """The classes a picture draws its rows by: a conditional generator's, else None."""
        return None if self.classes is None else self.classes.cpu()


def command(
    path: str,
    num: int | None,
    out: Path | None,
    seed: int,
    device_name: str,
    label: int | str | None,
    interpolate: int | None = None,
    truncation: float | None = None,
) -> None:
    """`gantool sample`: draw, write, and say what was written."""
    trained, written = sample_checkpoint(
        path, num, out, seed, device_name, label, interpolate, truncation
    )
    console.print(
        f"Wrote {written} (from {trained.checkpoint}, step {trained.step})",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


# --- latent walks --------------------------------------------------------------------------------
WALK_FORMATS = (".gif", ".png", ".npy", ".pt")
WALK_ACCEPTED = ".gif (an animation), .png (a strip), .npy, .pt (the images)"
WALK_STRIP_NUM = 8  # a strip's rows without --num (a conditional one: one per class)
WALK_SECONDS_PER_FRAME = 0.15


def check_images(kind, ds, interpolate: int) -> None:
    """Walks are drawn for datasets whose samples are images, (channels, height, width)."""
    if len(kind.sample_shape(ds)) != 3:
        raise ConfigError(
            f"--interpolate {interpolate}: {kind.label} samples are not images; "
            "latent walks are drawn for image datasets"
        )


def walk_num(num: int | None, out: Path, interpolate: int, kind, strip: int) -> int:
    """The number of paths: --num, else a GIF's grid or a file's count as a plain sample's
    (the family's default), or `strip` rows for a .png strip. Every path has K images; all
    of them must fit in one file as a picture (a GIF's frames together) or as .npy/.pt
    holds them."""
    fmt = out.suffix.lower()
    if fmt in (".gif", ".png") and ".png" not in kind.picture_formats:
        formats = ", ".join(kind.raw_formats)
        raise ConfigError(f"--out {out}: {kind.label} walks are written as {formats}")
    if num is None:
        num = strip if fmt == ".png" else kind.default_num
    limit = kind.max_num(".png" if fmt == ".gif" else fmt)
    if num * interpolate > limit:
        raise ConfigError(
            f"--num {num} --interpolate {interpolate}: a walk as {fmt} holds at most "
            f"{limit:,} {kind.label} images (paths x points)"
        )
    return num


def check_not_owned(out: Path, trained: Trained) -> None:
    """An output never goes over a checkpoint, into any run's checkpoints/, or onto a file of
    the run it comes from (its summary, metrics, logs, .hydra/)."""
    if run_of(out) is not None or (out.exists() and out.samefile(trained.checkpoint)):
        raise ConfigError(f"--out {out}: outputs never go over a checkpoint or into checkpoints/")
    if trained.run is not None and trained.run.owns(out):
        raise ConfigError(f"--out {out}: that is one of the run's own files; choose another name")


def walk_file(trained: Trained, latents: Latents, num_points: int, fmt: str, title: str) -> bytes:
    """The bytes of a walk: each of the latents' `num` paths from one draw to the next, at
    num_points evenly spaced points. A .gif has one frame per point, each the picture a plain
    sample of the paths draws (frame 1 is `gantool sample` of the same seed, the last the next
    draw); a .png strip has one row per path, its points left to right; .npy and .pt hold the
    images (paths, points, ...) as a plain sample's file holds them."""
    cfg = trained.config
    kind = family(cfg.dataset)
    path = walk(latents.draw(), latents.draw(), num_points, cfg.model)  # (N, K, latent[+1])
    # One batch per point, of the same size and memory layout as a plain sample's batch, so
    # the ends are the plain samples bit for bit.
    points = [
        generate(trained.generator, path[:, k].contiguous()).cpu() for k in range(num_points)
    ]  # K x (N, data_dim)
    if fmt == ".gif":
        frames = [
            picture(
                samples,
                cfg.dataset,
                ".png",
                f"{title}, point {k + 1}/{num_points}",
                latents.shown(),
            )
            for k, samples in enumerate(points)
        ]
        return progress_gif(frames, WALK_SECONDS_PER_FRAME)
    samples = torch.stack(points, dim=1).flatten(0, 1)  # (N * K, data_dim), path by path
    if fmt != ".png":
        return raw_samples(samples, cfg.dataset, fmt, (latents.num, num_points))
    # The family's values are the pixels in [0, 1], in sample_shape's (C, H, W) order.
    pixels = kind.values(samples, cfg.dataset).reshape(
        latents.num, num_points, *kind.sample_shape(cfg.dataset)
    )  # (N, K, C, H, W)
    names = class_names(kind, cfg.dataset)
    shown = latents.shown()
    labels = [""] * latents.num if shown is None else [label_name(c, names) for c in shown.tolist()]
    heading = f"{kind.label}, {title}, {latents.num} walks of {num_points} points"
    return walk_strip(pixels.numpy(), labels, heading, fmt.lstrip("."))


# --- truncation and classes ----------------------------------------------------------------------
def check_truncation(truncation: float | None, model) -> None:
    """--truncation: for normal noise only (uniform noise is bounded already)."""
    if truncation is not None and model.noise != "normal":
        raise ConfigError(
            f"--truncation {truncation:g}: this generator's noise is {model.noise} "
            "(model.noise); truncation is for normal noise"
        )


def class_names(kind, ds) -> tuple[str, ...]:
    """A labelled set's class names, in label order (empty: known by index only)."""
    return tuple(kind.names_of_classes(ds))


def label_name(index: int, names: tuple[str, ...]) -> str:
    return names[index] if index < len(names) else str(index)


def class_index(label: int | str | None, model, names: tuple[str, ...]) -> int | None:
    """--label as a class index: a class name (`cat`, or a digit's `3`) or an index, only for a
    conditional generator. A name comes first: an image folder's class "3" may be index 0."""
    if label is None:
        return None
    if not model.conditional:
        raise ConfigError(
            f"--label {label}: this generator is not conditional (model.conditional=false); "
            "it draws every class at once"
        )
    text = str(label)
    if text in names:
        return names.index(text)
    folded = [name.casefold() for name in names]
    if folded.count(text.casefold()) == 1:
        return folded.index(text.casefold())
    try:
        index = int(text)
    except ValueError:
        listed = ", ".join(names) if names else f"0 to {model.num_classes - 1}"
        raise ConfigError(
            f"--label {text}: not a class of this generator; its classes: {listed}"
        ) from None
    if not 0 <= index < model.num_classes:
        raise ConfigError(
            f"--label {text}: this generator draws classes 0 to {model.num_classes - 1}"
        )
    return index
