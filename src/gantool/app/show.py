"""What a command shows at its end: the tables of a run and of `gantool eval` (the last logged
statistics, and every evaluation number beside its target, the real-data floor and the noise
point), or its one error line and exit code."""

from __future__ import annotations

import os
import sys

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gantool.config.metrics import metric
from gantool.core.console import console, print_error, stderr
from gantool.core.errors import GantoolError, Interrupted, NothingToDo


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
        console.print(f"Samples:    {escape(summary['samples'])}")
    console.print(f"Run folder: [bold]{escape(summary['run_dir'])}[/]")


def print_eval(results: dict, targets: dict[str, float] | None = None) -> None:
    """The evaluation table: every scalar eval/* number, beside its target where the dataset
    has one, and beside real data and uniform noise measured the same way where the
    evaluation gives them; then the predicted classes' shares, if any."""
    targets = targets or {}
    num = results["eval/num_samples"]
    accuracy = results.get("eval/classifier_accuracy")
    title = f"Evaluation on {num:,} generated samples"
    if accuracy is not None:
        net = results.get("eval/feature_net")
        named = f", weights {net}" if net else ""
        title += f" (classifier features; its held-out accuracy {accuracy:.1%}{named})"
    keys = [
        k
        for k, v in results.items()
        if metric(k).score and isinstance(v, int | float) and not isinstance(v, bool)
    ]
    calibrated = any(metric(k).floor for k in keys)
    aimed = any(k in targets for k in keys)
    columns = ["metric", "generated"]
    columns += ["real data", "uniform noise"] if calibrated else []
    columns += ["target", "difference"] if aimed else []
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key in keys:
        about = metric(key)
        cells = [about.label, _number(results[key])]
        if calibrated:
            cells += [_number(results.get(k)) if k else "" for k in (about.floor, about.noise)]
        if aimed:
            want = targets.get(key)
            cells += [_number(want), "" if want is None else f"{results[key] - want:+.4f}"]
        table.add_row(*cells)
    console.print(table)
    shares = results.get("eval/class_histogram")
    if shares:
        names = results.get("eval/class_names") or [str(i) for i in range(len(shares))]
        shown = "  ".join(f"{n}: {p:.0%}" for n, p in zip(names, shares, strict=False))
        console.print(f"Predicted classes: {shown}", highlight=False)


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.4f}"


def torchrun() -> tuple[int, int]:
    """This process' RANK and the WORLD_SIZE, as torchrun sets them; (0, 1) without it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def exit_with(error: GantoolError) -> None:
    """Say the error (rank 0; the others only their own errors) and exit with its code."""
    rank, _ = torchrun()
    if isinstance(error, NothingToDo):
        if rank == 0:
            print(error)
    elif isinstance(error, Interrupted):  # a stop the user asked for is not an error
        if rank == 0:  # all ranks stop together; rank 0 says where it saved
            stderr.print(Text(f"stopped: {error}"), soft_wrap=True)
    elif rank == 0:
        print_error(str(error))
    else:
        print_error(f"rank {rank}: {error}")
    sys.exit(error.exit_code)
