"""Pictures of training: the loss curves, the moments over training, the progress GIF."""

from __future__ import annotations

import io

from PIL import Image

from gantool.plots.render import figure, render


def training_curves(
    rows: list[dict], labels: tuple[str, str], probabilities: bool, loss: str
) -> bytes:
    """D and G losses, and D's mean output on real and generated samples, against step, as a
    PNG: under a loss whose D gives `probabilities` (bce), between 0 and 1 with 0.5 marked;
    else the score the loss reads. `labels` name D's two outputs; `loss`, the loss."""
    steps = [r["step"] for r in rows]
    fig = figure(figsize=(7, 6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(steps, [r["train/d_loss"] for r in rows], label="D loss")
    top.plot(steps, [r["train/g_loss"] for r in rows], label="G loss")
    top.set_ylabel("loss")
    top.legend()
    real, fake = labels
    bottom.plot(steps, [r["train/d_real"] for r in rows], label=real)
    bottom.plot(steps, [r["train/d_fake"] for r in rows], label=fake)
    if probabilities:
        bottom.axhline(0.5, color="grey", lw=0.8, ls="--")
        bottom.set_ylim(0, 1)
        bottom.set_ylabel("D's probability of real")
    else:
        bottom.axhline(0.0, color="grey", lw=0.8, ls="--")
        bottom.set_ylabel(f"D's mean output ({loss})")
    bottom.set_xlabel("step")
    bottom.legend()
    return render(fig)


def moments_over_training(rows: list[dict], mean: float, std: float) -> bytes:
    """Generated mean and std against step, with the target values as dashed lines: a PNG."""
    steps = [r["step"] for r in rows]
    fig = figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    for ax, key, target, label in (
        (left, "train/fake_mean", mean, "mean"),
        (right, "train/fake_std", std, "std"),
    ):
        ax.plot(steps, [r[key] for r in rows], label=f"generated {label}")
        ax.axhline(target, color="k", ls="--", label=f"target {target:g}")
        ax.set_xlabel("step")
        ax.set_title(f"generated {label}")
        ax.legend()
    return render(fig)


def progress_gif(frames: list[bytes], seconds_per_frame: float = 0.5) -> bytes:
    """An animation of sample pictures (PNG bytes, oldest first) as the bytes of a GIF file,
    the last frame held longer."""
    images = [Image.open(io.BytesIO(frame)).convert("RGB") for frame in frames]
    size = images[-1].size
    images = [im if im.size == size else im.resize(size) for im in images]
    ms = int(seconds_per_frame * 1000)
    durations = [ms] * (len(images) - 1) + [4 * ms]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0
    )
    return buffer.getvalue()
