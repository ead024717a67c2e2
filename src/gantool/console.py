"""What gantool shows in the terminal: the progress bar, result tables and error lines."""

from __future__ import annotations

from rich.console import Console
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

# How the Gaussian report's keys read in the table.
LABELS = {
    "excess_kurtosis": "excess kurtosis",
    "ks": "KS statistic",
    "w1": "W1 distance",
}


def print_error(message: str) -> None:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


class ProgressBar:
    """A rich progress bar over training steps, showing the latest logged statistics."""

    def __init__(self, total: int, start: int):
        self.progress = Progress(
            TextColumn("[bold]step"),
            MofNCompleteColumn(),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("<"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=console,
        )
        self.task = self.progress.add_task("train", total=total, completed=start, stats="")

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


def print_summary(summary: dict) -> None:
    """The end-of-run table: final statistics, generated-vs-target moments, the run folder."""
    final = summary.get("final", {})
    if final:
        table = Table(title=f"Step {summary['step']}: last logged interval", title_justify="left")
        for key in final:
            if key != "step":
                table.add_column(key.removeprefix("train/"), justify="right")
        table.add_row(*(f"{v:.4f}" for k, v in final.items() if k != "step"))
        console.print(table)
    report = summary.get("gaussian")
    if report:
        table = Table(
            title=f"Generated vs target on {summary['num_eval_samples']:,} samples",
            title_justify="left",
        )
        for col in ("statistic", "generated", "target", "difference"):
            table.add_column(col, justify="left" if col == "statistic" else "right")
        for name, v in report.items():
            diff = v["generated"] - v["target"]
            label = LABELS.get(name, name)
            table.add_row(label, f"{v['generated']:.4f}", f"{v['target']:.4f}", f"{diff:+.4f}")
        console.print(table)
    if summary.get("samples"):
        console.print(f"Samples:    {summary['samples']}")
    console.print(f"Run folder: [bold]{summary['run_dir']}[/]")
