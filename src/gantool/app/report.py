"""`gantool report SWEEP_DIR`: one row per job of a sweep, as a table and as report.csv.

It reads only what the jobs left behind (.hydra/overrides.yaml and config.yaml, summary.json,
metrics.jsonl), so it imports no torch and works while a sweep is still running. A job whose
files are damaged gets an error line; the others are reported as usual.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml
from rich.table import Table
from rich.text import Text

from gantool.config.metrics import HIGHER_IS_BETTER, TARGETED  # other metrics sort ascending
from gantool.core import console as terminal  # looked up at each print: tests redirect it
from gantool.core.errors import GantoolError
from gantool.core.files import NotRegular, read_regular
from gantool.training.run_folder import RunFolder

# The losses shown from each job's last logged interval.
LOSS_KEYS = ("train/d_loss", "train/g_loss")

# A job without summary.json has not finished: it is still running, or it was killed.
UNFINISHED = "unfinished"

CSV_NAME = "report.csv"

# TARGETED: statistics whose best is a target value, not the lowest (the moments of a 1-D
# target). Each ranks by its distance from the job's own target, and a job whose target is
# unknown ranks last.


@dataclass
class Job:
    """One run folder, as the report sees it."""

    name: str  # the folder relative to the sweep folder: "0", "1", ...
    overrides: list[str]
    status: str
    step: int | None = None
    values: dict[str, float] = field(default_factory=dict)  # losses, eval/*, objective, wall
    objective: str | None = None  # the objective's metric name, e.g. eval/w1
    error: str = ""  # why the run failed, as its summary.json says
    targets: dict[str, float] = field(default_factory=dict)  # eval key -> a perfect score
    problems: list[str] = field(default_factory=list)  # files of the job that cannot be read
    overrides_read: bool = True  # False: its .hydra/overrides.yaml is damaged
    path: Path | None = None  # its folder: where its pictures and metrics.jsonl are


@dataclass
class Column:
    """One column of the printed table."""

    header: str
    cells: list  # rich Text, one per job
    right: bool = False  # numbers are right-aligned
    width: int = 0  # set when the table is fitted to the terminal

    def narrowest(self) -> int:
        """Its widest cell, or its header's longest word: headers wrap, words and cells do not."""
        words = [len(piece.rstrip()) for piece in header_pieces(self.header)]
        return max(*words, *(cell.cell_len for cell in self.cells), 1)

    def unwrapped(self) -> int:
        """The width with its header on one line."""
        return max(len(self.header), self.narrowest())


def report(sweep_dir: Path, sort: str | None = None, write_page=None) -> Path:
    """Print the sweep's table, sorted by `sort` (default: job order); write and return its CSV.
    `write_page(sweep_dir, jobs, sort) -> Path` (report_html's, for --html) runs first, so that
    a page that cannot be written refuses the command before anything is printed or written."""
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    if sort is not None:
        jobs = sort_jobs(jobs, sort)
    page = write_page(sweep_dir, jobs, sort) if write_page is not None else None
    keys = metric_keys(jobs)
    screen = terminal.console
    title, tables, notes = make_tables(jobs, keys, sweep_dir, sort, screen.width)
    screen.print(title, soft_wrap=True)
    for table in tables:
        screen.print(table, crop=False)
    for note in notes:
        screen.print(note, soft_wrap=True)
    for job in jobs:
        if job.error:
            screen.print(Text(f"job {job.name} {job.status}: {job.error}"), soft_wrap=True)
        for problem in job.problems:
            screen.print(Text(f"job {job.name}: {problem}"), soft_wrap=True)
    path = write_csv(jobs, keys, sweep_dir / CSV_NAME)
    screen.print(Text(f"Wrote {path}"), soft_wrap=True)
    if page is not None:
        screen.print(Text(f"Wrote {page}"), soft_wrap=True)
    return path


def load_jobs(sweep_dir: Path) -> list[Job]:
    """Every job under `sweep_dir` (or `sweep_dir` itself, if it is one run), in job order."""
    if not sweep_dir.is_dir():
        raise GantoolError(f"{sweep_dir} is not a folder")
    dirs = find_job_dirs(sweep_dir)
    if not dirs:
        raise GantoolError(
            f"{sweep_dir} holds no gantool runs: no .hydra/overrides.yaml or summary.json in it"
        )
    return [read_job(d, sweep_dir) for d in dirs]


def find_job_dirs(root: Path) -> list[Path]:
    """Folders holding .hydra/overrides.yaml or summary.json (`root` itself, for a single run),
    but none inside another one: a job's own subfolders are its outputs, not more jobs."""
    marked = {p.parent.parent for p in root.rglob(".hydra/overrides.yaml")}
    # logger=mlflow's store (outputs/mlruns) holds copies of runs' summary.json as artifacts.
    summaries = (p for p in root.rglob("summary.json") if "mlruns" not in p.relative_to(root).parts)
    marked |= {p.parent for p in summaries}
    outermost = [d for d in marked if not any(parent in marked for parent in d.parents)]
    return sorted(outermost, key=lambda d: _natural_key(d.relative_to(root).as_posix()))


def _natural_key(name: str) -> list:
    """Sorts "2" before "10": runs of digits compare as numbers. Splitting on a captured group
    alternates text and digits, so items at the same place always have the same type."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def read_job(job_dir: Path, sweep_dir: Path) -> Job:
    # A single run is named after its folder; jobs after their folder within the sweep.
    name = (
        job_dir.resolve().name
        if job_dir == sweep_dir
        else job_dir.relative_to(sweep_dir).as_posix()
    )
    job = Job(name, [], UNFINISHED, path=job_dir)
    folder = RunFolder(job_dir)
    if folder.overrides_file.is_file():  # a folder with only summary.json is a job too
        try:
            job.overrides = folder.read_overrides()
        except GantoolError as e:  # damaged: the row without overrides, and an error line
            job.problems.append(str(e))
            job.overrides_read = False
    summary = _read_summary(job_dir / "summary.json", job)
    job.targets = _targets(job_dir / ".hydra" / "config.yaml", summary, job)
    if summary is None:
        if job.status == UNFINISHED:
            job.step = _last_logged_step(job_dir)
        return job

    job.status = str(summary.get("status", "unknown"))
    job.error = str(summary.get("error") or "")
    step = summary.get("step")
    job.step = step if is_number(step) else _last_logged_step(job_dir)
    final = _dict(summary, "final")
    for key in LOSS_KEYS:
        if is_number(final.get(key)):
            job.values[key] = final[key]
    for key, value in _dict(summary, "eval").items():
        if is_number(value):  # lists such as eval/class_histogram have no place in a row
            job.values[key] = value
    objective = _dict(summary, "objective")
    if is_number(objective.get("value")):
        job.values["objective"] = objective["value"]
        job.objective = objective.get("name")
    wall = summary.get("wall_seconds", summary.get("train_seconds"))
    if is_number(wall):
        job.values["wall_seconds"] = wall
    later = folder.read_failure()  # a resume after completing failed: the summary stands
    if later:
        job.problems.append(f"a later resume {later['status']}: {later['error']}")
    return job


def _read_summary(path: Path, job: Job) -> dict | None:
    """summary.json, or None: the job has not finished (status unfinished) or the file is
    damaged (status unreadable, and its error)."""
    if not path.exists():
        return None
    try:
        summary = json.loads(read_regular(path))
    except (OSError, ValueError, NotRegular) as e:  # ValueError: not JSON, or not UTF-8
        job.status, job.error = "unreadable", f"cannot read summary.json: {e}"
        return None
    if not isinstance(summary, dict):
        job.status, job.error = "unreadable", "summary.json holds no JSON object"
        return None
    return summary


def _targets(config_path: Path, summary: dict | None, job: Job) -> dict[str, float]:
    """What a perfect generator would score, per eval key: summary.json's "targets" (the
    dataset's own, written since they existed). Runs from before have only the Gaussian's,
    read from .hydra/config.yaml: dataset.mean and dataset.std, 0 skewness and excess kurtosis."""
    saved = _dict(summary or {}, "targets")
    if not saved and config_path.is_file():
        try:
            config = yaml.safe_load(read_regular(config_path).decode("utf-8"))
        except (OSError, ValueError, yaml.YAMLError, NotRegular) as e:  # ValueError: not UTF-8
            job.problems.append(f"cannot read {config_path}: {_one_line(e)}")
            config = None
        dataset = _dict(config, "dataset") if isinstance(config, dict) else {}
        if dataset.get("name") == "gaussian":
            saved = {
                "eval/mean": dataset.get("mean"),
                "eval/std": dataset.get("std"),
                "eval/skewness": 0.0,
                "eval/excess_kurtosis": 0.0,
            }
    return {k: float(v) for k, v in saved.items() if is_number(v)}


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _dict(summary: dict, key: str) -> dict:
    value = summary.get(key)
    return value if isinstance(value, dict) else {}


def _last_logged_step(job_dir: Path) -> int | None:
    """The step of the last complete row of metrics.jsonl: how far an unfinished job got."""
    rows = logged_rows(job_dir)
    return int(rows[-1]["step"]) if rows else None


def logged_rows(job_dir: Path) -> list[dict]:
    """The complete rows of metrics.jsonl that have a step, oldest first; none when the file
    is missing or unreadable. A row cut short by a kill, or not a JSON object, is skipped."""
    try:
        lines = read_regular(job_dir / "metrics.jsonl").decode(errors="replace").splitlines()
    except (OSError, NotRegular):
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and is_number(row.get("step")):
            rows.append(row)
    return rows


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def metric_keys(jobs: list[Job]) -> list[str]:
    """The columns of numbers: losses, every eval/* metric any job has (first seen first),
    the objective, the wall time."""
    seen = dict.fromkeys(LOSS_KEYS)
    for job in jobs:
        seen.update(dict.fromkeys(k for k in job.values if k.startswith("eval/")))
    seen.update(dict.fromkeys(("objective", "wall_seconds")))
    return [k for k in seen if any(k in job.values for job in jobs)]


def resolve_metric(name: str, jobs: list[Job]) -> str:
    """The full key meant by `name`: `eval/fld`, or `fld` when only one key ends that way."""
    keys = metric_keys(jobs)
    if name in keys:
        return name
    matches = [k for k in keys if k.rpartition("/")[2] == name]
    if len(matches) == 1:
        return matches[0]
    available = ", ".join(keys) if keys else "none (no job has finished)"
    if matches:
        raise GantoolError(f"--sort {name} is ambiguous: say one of {', '.join(matches)}")
    raise GantoolError(f"--sort {name}: no such metric; available: {available}")


def higher_is_better(key: str, jobs: list[Job]) -> bool:
    if key == "objective":  # it is better the way its own metric is
        names = {job.objective for job in jobs if job.objective}
        return len(names) == 1 and higher_is_better(names.pop(), jobs)
    return key in HIGHER_IS_BETTER


def targeted(key: str, jobs: list[Job]) -> bool:
    """Whether `key`'s best is the value nearest a target (see TARGETED)."""
    if key == "objective":
        names = {job.objective for job in jobs if job.objective}
        return len(names) == 1 and names.pop() in TARGETED
    return key in TARGETED


def score(job: Job, key: str, jobs: list[Job]) -> float | None:
    """What ranks `job` by `key`: its distance from the job's target for the key, where it has
    one, else its value. None when it has no value (failed, unfinished), or no target for a
    statistic that needs one (TARGETED)."""
    value = job.values.get(key, math.nan)
    if math.isnan(value):
        return None
    stat = job.objective if key == "objective" else key
    target = job.targets.get(stat)
    if target is not None:
        return abs(value - target)
    return None if stat in TARGETED else value


def sort_jobs(jobs: list[Job], metric: str) -> list[Job]:
    """Best first by `metric`; jobs without it (failed, unfinished) last, in job order."""
    key = resolve_metric(metric, jobs)
    descending = higher_is_better(key, jobs)
    scores = {id(job): score(job, key, jobs) for job in jobs}
    has = [job for job in jobs if scores[id(job)] is not None]
    lacks = [job for job in jobs if scores[id(job)] is None]
    return sorted(has, key=lambda j: scores[id(j)], reverse=descending) + lacks


def split_overrides(jobs: list[Job]) -> tuple[list[str], list[str]]:
    """The override keys whose value differs between jobs (one column each), and the overrides
    every job has alike. Jobs whose overrides could not be read take no part."""
    known = [job for job in jobs if job.overrides_read]
    parsed = [dict(_key_value(o) for o in job.overrides) for job in known]
    keys = list(dict.fromkeys(k for overrides in parsed for k in overrides))
    varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
    shared = [o for o in known[0].overrides if _key_value(o)[0] not in varying] if known else []
    return varying, shared


def _key_value(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key, value


def _labels(keys: list[str]) -> dict[str, str]:
    """Column titles: the name after the prefix, unless two keys would then read the same."""
    short = {k: k.rpartition("/")[2] for k in keys}
    counts = {s: list(short.values()).count(s) for s in short.values()}
    labels = {k: (s if counts[s] == 1 else k).replace("_", " ") for k, s in short.items()}
    labels.update({"wall_seconds": "wall time"})
    return labels


def make_tables(jobs: list[Job], keys: list[str], sweep_dir: Path, sort: str | None, width: int):
    """The title line, the table (split into several, each repeating the job column, where it
    would be wider than `width`) and the notes below it."""
    title, columns, notes = make_columns(jobs, keys, sweep_dir, sort)
    return title, [_table(part) for part in _fit(columns, width)], notes


def make_columns(
    jobs: list[Job], keys: list[str], sweep_dir: Path, sort: str | None
) -> tuple[Text, list[Column], list[Text]]:
    """The title line, the table's columns (the job column first) and the notes below it: what
    the terminal table and the HTML page both show."""
    varying, shared = split_overrides(jobs)
    overrides = [dict(_key_value(o) for o in job.overrides) for job in jobs]
    notes: list[str] = []
    # A column that is the same in every job (a status, a step, a sample count, a calibration
    # point) becomes a note, as shared overrides do; the CSV keeps every column.
    same: dict[str, str] = {}
    if len(jobs) > 1:
        for key, values in (("status", [j.status for j in jobs]), ("step", [j.step for j in jobs])):
            if len(set(values)) == 1 and values[0] is not None:
                same[key] = str(values[0])
        for key in keys:
            values = {job.values.get(key) for job in jobs}
            if len(values) == 1 and None not in values:
                same[key] = format_value(key, values.pop())
    keys = [k for k in keys if k not in same]
    labels = _labels(keys)
    objectives = {job.objective for job in jobs if job.objective}
    objective_key = objectives.pop() if len(objectives) == 1 else None
    if objective_key in keys:  # its own column already shows it: that one gets the bold
        keys.remove("objective")
        labels[objective_key] += "*"
        notes.append("* the objective, its best in bold")
    elif objective_key:
        labels["objective"] = f"objective {objective_key}"
    # The best objective in bold. Other columns have no plain best: losses and counts.
    best = _best(jobs, "objective")
    bold_key = objective_key if objective_key in keys else "objective"

    columns = [Column("job", [Text(job.name) for job in jobs])]
    if "status" not in same:
        status = [Text(j.status, "" if j.status == "completed" else "red") for j in jobs]
        columns.append(Column("status", status))
    if "step" not in same:
        steps = [Text("" if j.step is None else str(j.step)) for j in jobs]
        columns.append(Column("step", steps, right=True))
    for key in varying:  # one column per override that differs between jobs; "?": unreadable
        cells = [
            Text(o.get(key, "") if job.overrides_read else "?")
            for o, job in zip(overrides, jobs, strict=True)
        ]
        columns.append(Column(key, cells))
    for key in keys:
        values = [job.values.get(key) for job in jobs]
        bold = [key == bold_key and job in best for job in jobs]
        cells = [Text(format_value(key, v), "bold" * b) for v, b in zip(values, bold, strict=True)]
        columns.append(Column(labels[key], cells, right=True))

    order = ""
    if sort:
        key = resolve_metric(sort, jobs)
        order = f", best {key} first" + " (nearest its target)" * targeted(key, jobs)
    if shared:
        notes.insert(0, f"{'shared ' * (len(jobs) > 1)}overrides: {' '.join(shared)}")
    if same:
        notes.append("the same in every job: " + ", ".join(f"{k} {v}" for k, v in same.items()))
    if any(targeted(k, jobs) for k in keys):
        notes.append(f"targets: {_describe_targets(jobs)}")
    title = Text(f"{sweep_dir}: {len(jobs)} job{'s' * (len(jobs) != 1)}{order}")
    return title, columns, [Text(n) for n in notes]


def _fit(columns: list[Column], width: int) -> list[list[Column]]:
    """The columns as tables no wider than `width` (unless one column alone is), their widths
    set. A column is as narrow as `Column.narrowest` allows; the columns that do not fit go into
    a next table, which repeats the first (job) column. Spare width unwraps headers, those that
    need the least first."""

    def table_width(part: list[Column]) -> int:
        return sum(c.narrowest() for c in part) + 3 * len(part) + 1  # padding and borders

    first, parts = columns[0], [[]]
    for column in columns[1:]:
        if parts[-1] and table_width([first, *parts[-1], column]) > width:
            parts.append([])
        parts[-1].append(column)
    tables = []
    for part in parts:
        part = [replace(c, width=c.narrowest()) for c in [first, *part]]
        spare = width - table_width(part)
        for column in sorted(part, key=lambda c: c.unwrapped() - c.width):
            grow = column.unwrapped() - column.width
            if grow <= spare:
                column.width += grow
                spare -= grow
        tables.append(part)
    return tables


def header_pieces(header: str) -> list[str]:
    """Where a header may wrap: after a space, a dot or a slash ("model.", "g.", "activation")."""
    return re.findall(r"[^ ./]+[ ./]?|[ ./]", header) or [""]


def _wrap_header(header: str, width: int) -> str:
    lines = [""]
    for piece in header_pieces(header):
        if lines[-1] and len((lines[-1] + piece).rstrip()) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(line.rstrip() for line in lines)


def _table(columns: list[Column]):
    table = Table()
    for c in columns:
        justify = "right" if c.right else "left"
        header = Text(_wrap_header(c.header, c.width), justify=justify)
        table.add_column(header, justify=justify, width=c.width)
    for row in zip(*(c.cells for c in columns), strict=True):
        table.add_row(*row)
    return table


def _describe_targets(jobs: list[Job]) -> str:
    """The targets in words: "mean 4, std 1.25, skewness 0, excess kurtosis 0"."""
    parts = []
    for key in TARGETED:
        name = key.removeprefix("eval/").replace("_", " ")
        found = {job.targets[key] for job in jobs if key in job.targets}
        if len(found) == 1:
            parts.append(f"{name} {found.pop():.4g}")
        elif found:
            parts.append(f"{name} each job's own")
    return ", ".join(parts) or "unknown"


def _best(jobs: list[Job], key: str) -> list[Job]:
    """The jobs with the best value of `key` (nearest its target, where it has one)."""
    scores = [(score(job, key, jobs), job) for job in jobs]
    scores = [(s, job) for s, job in scores if s is not None]
    if not scores:
        return []
    pick = max if higher_is_better(key, jobs) else min
    best = pick(s for s, _ in scores)
    return [job for s, job in scores if s == best]


def format_value(key: str, value: float | None) -> str:
    if value is None:
        return ""
    if key == "wall_seconds":
        return terminal.duration(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def write_csv(jobs: list[Job], keys: list[str], path: Path) -> Path:
    """One row per job with its full overrides and every number unrounded."""
    header = ["job", "status", "step", "overrides", *keys, "objective_name", "error"]
    try:
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for job in jobs:
                numbers = [job.values.get(k, "") for k in keys]
                step = "" if job.step is None else job.step
                overrides = " ".join(job.overrides)
                row = [job.name, job.status, step, overrides, *numbers, job.objective or ""]
                writer.writerow([*row, "; ".join(filter(None, [job.error, *job.problems]))])
    except OSError as e:
        raise GantoolError(f"cannot write {path}: {e.strerror or e}") from e
    return path
