"""What gantool shows in the terminal: the progress bar, log lines and error lines."""

from __future__ import annotations

import logging
import time

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

log = logging.getLogger(__name__)

console = Console()
stderr = Console(stderr=True)
# Piped into a file or another program, a line is never cut at 80 columns: a path or a message
# stays whole, on one line (tables still fit console.width: 80, or $COLUMNS).
for _console in (console, stderr):
    _console.soft_wrap = not _console.is_terminal


def print_error(message: str) -> None:
    # escape: a message may hold brackets, like a path "[x]" or a library's "[file:line]"
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


class ProgressBar:
    """Progress over steps with the latest logged training statistics.

    On a terminal, a live bar. At each log row, also one plain line through `logging`
    (`step 100/2000  D 1.386 ...  12.3 s elapsed, ETA 3:05`): train.log always gets it, and the
    console shows it when it is no terminal (a file, a pipe), where no bar can be drawn.
    """

    def __init__(
        self,
        total: int,
        start: int = 0,
        visible: bool = True,
        label: str = "step",
        transient: bool = False,
        outputs: tuple[str, str] = ("D(x)", "D(G(z))"),
    ):
        self.total, self.first_step, self.label = total, start, label
        self.outputs = outputs  # what D's mean outputs are called under the run's loss
        self.visible = visible  # False on all but one process of a multi-process run
        self.started = time.perf_counter()
        self.progress = _FittedProgress(
            label,
            total,
            console=console,
            disable=not (visible and console.is_terminal),
            transient=transient,  # gone from the terminal once done
        )
        self.task = self.progress.add_task(label, total=total, completed=start, stats="")

    def __enter__(self) -> ProgressBar:
        self.started = time.perf_counter()
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
            f"{self.outputs[0]} {row['train/d_real']:.2f}  "
            f"{self.outputs[1]} {row['train/d_fake']:.2f}  "
            f"mean {row['train/fake_mean']:.3f}  std {row['train/fake_std']:.3f}"
        )
        self.progress.update(self.task, completed=step, stats=stats)
        if self.visible:
            log.info("%s", self.line(step, stats), extra={PROGRESS: True})

    def line(self, step: int, stats: str) -> str:
        """The plain progress line: steps, statistics, time so far and, until the end, the ETA
        at the average pace since this bar started."""
        elapsed = time.perf_counter() - self.started
        times = f"{duration(elapsed)} elapsed"
        if self.first_step < step < self.total:
            left = elapsed / (step - self.first_step) * (self.total - step)
            times += f", ETA {duration(left)}"
        return f"{self.label} {step}/{self.total}  {stats}  {times}"


# A log record with this attribute set is a progress line (the live bar shows the same).
PROGRESS = "gantool_progress"


class _FittedProgress(Progress):
    """Step, bar, elapsed time and ETA on one line, and the statistics beside them where the
    terminal is wide enough; else on a line of their own below, cut short at its edge. The bar
    gives up its width before anything else does."""

    MAX_BAR, MIN_BAR = 40, 10

    def __init__(self, label: str, total: int, **kwargs):
        self.bar = BarColumn(bar_width=self.MAX_BAR)
        self.stats_column = TextColumn("{task.fields[stats]}")
        left = (TextColumn(f"[bold]{escape(label)}"), MofNCompleteColumn())
        right = (TimeElapsedColumn(), TextColumn("<"), TimeRemainingColumn())
        self.without_bar = (*left, *right)
        self.with_bar = (*left, self.bar, *right)
        # All but the bar and the statistics: "step 2000/2000 0:00:12 < 0:03:05" and the gaps.
        self.fixed_width = len(label) + 2 * len(str(total)) + 1 + 7 + 1 + 7 + 5
        self.screen = kwargs["console"]  # rich renders once before self.console is set up
        super().__init__(*self.with_bar, **kwargs)

    def get_renderables(self):
        stats = self.tasks[0].fields.get("stats", "") if self.tasks else ""
        room = self.screen.width - self.fixed_width - 1  # for the bar and its gap
        beside = bool(stats) and room - len(stats) - 1 >= self.MIN_BAR
        if beside:
            room -= len(stats) + 1
        self.bar.bar_width = min(self.MAX_BAR, room)
        self.columns = self.with_bar if room >= 3 else self.without_bar
        if beside:
            self.columns = (*self.columns, self.stats_column)
        yield self.make_tasks_table(self.tasks)
        if stats and not beside:
            yield Text(stats, no_wrap=True, overflow="ellipsis")


class LogHandler(RichHandler):
    """The console's log lines (Hydra's job_logging sends them here): rich's layout on a
    terminal, where the live bar stands in for progress lines; plain, whole lines when the
    output is a file or a pipe."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("console", console)
        super().__init__(*args, **kwargs)
        self.tag = ""  # put before every line: "[job 3] " in a sweep, whose jobs interleave

    def emit(self, record: logging.LogRecord) -> None:
        if self.tag:
            record = logging.makeLogRecord({**record.__dict__, "msg": f"{self.tag}{record.msg}"})
        if self.console.is_terminal:
            if not getattr(record, PROGRESS, False):
                super().emit(record)
            return
        try:
            message = self.format(record)
            if record.levelno >= logging.WARNING:
                message = f"{record.levelname}: {message}"
            self.console.print(Text(message), soft_wrap=True, highlight=False)
        except Exception:
            self.handleError(record)


def duration(seconds: float) -> str:
    """12.3 s, 1:02, 1:02:03: how wall times and ETAs read."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
