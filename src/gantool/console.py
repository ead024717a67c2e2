"""What gantool shows in the terminal: the progress bar, result tables and error lines."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console()
stderr = Console(stderr=True)

# How evaluation keys read in the tables.
LABELS = {
    "eval/mean": "mean",
    "eval/std": "std",
    "eval/skewness": "skewness",
    "eval/excess_kurtosis": "excess kurtosis",
    "eval/ks": "KS statistic",
    "eval/w1": "W1 distance",
    "eval/fld": "FLD ↓",
    "eval/precision": "precision ↑",
    "eval/recall": "recall ↑",
    "eval/class_kl": "class KL from uniform ↓",
    "eval/num_classes_covered": "digits with ≥ 5% of samples ↑",
}
# MNIST: each generated-sample number beside the same number for real images and for noise.
CALIBRATED = {
    "eval/fld": ("eval/fld_real_floor", "eval/fld_noise"),
    "eval/precision": ("eval/precision_real", "eval/precision_noise"),
    "eval/recall": ("eval/recall_real", "eval/recall_noise"),
    "eval/class_kl": (None, None),
    "eval/num_classes_covered": (None, None),
}


def print_error(message: str) -> None:
    # escape: a message may hold brackets, like a path "[x]" or a library's "[file:line]"
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


class ProgressBar:
    """A rich progress bar over steps, showing the latest logged training statistics."""

    def __init__(
        self,
        total: int,
        start: int = 0,
        visible: bool = True,
        label: str = "step",
        transient: bool = False,
    ):
        self.progress = Progress(
            TextColumn(f"[bold]{label}"),
            MofNCompleteColumn(),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("<"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=console,
            disable=not visible,  # hidden on all but one process of a multi-process run
            transient=transient,  # gone from the terminal once done
        )
        self.task = self.progress.add_task(label, total=total, completed=start, stats="")

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def update(self, step: int, row: dict | None = None) -> None:
        if row is None:
            self.progress.update(self.task, completed=step)
            return
        stats = (
            f"D {row['train/d_loss']:.3f}  G {row['train/g_loss']:.3f}  "
            f"D(x) {row['train/d_real']:.2f}  D(G(z)) {row['train/d_fake']:.2f}  "
            f"mean {row['train/fake_mean']:.3f}  std {row['train/fake_std']:.3f}"
        )
        self.progress.update(self.task, completed=step, stats=stats)


def print_summary(summary: dict, targets: dict[str, float] | None = None) -> None:
    """The end-of-run tables: the last logged statistics, the evaluation, the run folder."""
    final = summary.get("final", {})
    if final:
        table = Table(title=f"Step {summary['step']}: last logged interval", title_justify="left")
        for key in final:
            if key != "step":
                table.add_column(key.removeprefix("train/"), justify="right")
        table.add_row(*(f"{v:.4f}" for k, v in final.items() if k != "step"))
        console.print(table)
    if summary.get("eval"):
        print_eval(summary["eval"], targets)
    if summary.get("samples"):
        console.print(f"Samples:    {summary['samples']}")
    console.print(f"Run folder: [bold]{summary['run_dir']}[/]")


def print_eval(results: dict, targets: dict[str, float] | None = None) -> None:
    """The evaluation table: against the targets (Gaussian), or beside real images and
    uniform noise measured the same way (MNIST)."""
    num = results["eval/num_samples"]
    if "eval/fld" in results:
        accuracy = results["eval/classifier_accuracy"]
        table = Table(
            title=f"Evaluation on {num:,} generated digits (LeNet features; its held-out "
            f"accuracy {accuracy:.1%})",
            title_justify="left",
        )
        for col in ("metric", "generated", "real images", "uniform noise"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for key, (real, noise) in CALIBRATED.items():
            cells = [_number(results.get(k)) if k else "" for k in (key, real, noise)]
            table.add_row(LABELS[key], *cells)
        console.print(table)
        shares = results["eval/class_histogram"]
        console.print(
            "Predicted digits: " + "  ".join(f"{d}: {p:.0%}" for d, p in enumerate(shares))
        )
        return
    table = Table(title=f"Generated vs target on {num:,} samples", title_justify="left")
    for col in ("statistic", "generated", "target", "difference"):
        table.add_column(col, justify="left" if col == "statistic" else "right")
    for key, label in LABELS.items():
        if key in results:
            want = (targets or {}).get(key)
            diff = "" if want is None else f"{results[key] - want:+.4f}"
            table.add_row(label, f"{results[key]:.4f}", _number(want), diff)
    console.print(table)


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,}" if isinstance(value, int) else f"{value:.4f}"
