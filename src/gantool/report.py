"""`gantool report SWEEP_DIR`: one row per job of a sweep, as a table and as report.csv.

It reads only what the jobs left behind (.hydra/overrides.yaml, summary.json, metrics.jsonl),
so it imports no torch and works while a sweep is still running.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gantool.config import HIGHER_IS_BETTER  # every other metric sorts ascending
from gantool.errors import GantoolError

# The losses shown from each job's last logged interval.
LOSS_KEYS = ("train/d_loss", "train/g_loss")

# A job without summary.json has not finished: it is still running, or it was killed.
UNFINISHED = "unfinished"

CSV_NAME = "report.csv"


@dataclass
class Job:
    """One run folder, as the report sees it."""

    name: str  # the folder relative to the sweep folder: "0", "1", ...
    overrides: list[str]
    status: str
    step: int | None = None
    values: dict[str, float] = field(default_factory=dict)  # losses, eval/*, objective, wall
    objective: str | None = None  # the objective's metric name, e.g. eval/w1
    error: str = ""


def report(sweep_dir: Path, sort: str | None = None) -> Path:
    """Print the sweep's table, sorted by `sort` (default: job order); write and return its CSV."""
    from rich.text import Text

    from gantool.console import console

    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    if sort is not None:
        jobs = sort_jobs(jobs, sort)
    keys = metric_keys(jobs)
    table, width = make_table(jobs, keys, sweep_dir, sort)
    # Wider than the terminal rather than cut: the terminal wraps what does not fit.
    console.print(table, width=max(width, console.width), crop=False)
    for job in jobs:
        if job.error:
            console.print(Text(f"job {job.name} {job.status}: {job.error}"), soft_wrap=True)
    path = write_csv(jobs, keys, sweep_dir / CSV_NAME)
    console.print(f"Wrote {path}")
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
    marked |= {p.parent for p in root.rglob("summary.json")}
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
    overrides = _read_overrides(job_dir / ".hydra" / "overrides.yaml")
    summary_path = job_dir / "summary.json"
    if not summary_path.is_file():
        return Job(name, overrides, UNFINISHED, step=_last_logged_step(job_dir))
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError) as e:
        return Job(name, overrides, "unreadable", error=f"cannot read summary.json: {e}")
    if not isinstance(summary, dict):
        return Job(name, overrides, "unreadable", error="summary.json holds no JSON object")

    status = str(summary.get("status", "unknown"))
    job = Job(name, overrides, status, error=str(summary.get("error") or ""))
    step = summary.get("step")
    job.step = step if _is_number(step) else _last_logged_step(job_dir)
    final = _dict(summary, "final")
    for key in LOSS_KEYS:
        if _is_number(final.get(key)):
            job.values[key] = final[key]
    for key, value in _dict(summary, "eval").items():
        if _is_number(value):  # lists such as eval/class_histogram have no place in a row
            job.values[key] = value
    objective = _dict(summary, "objective")
    if _is_number(objective.get("value")):
        job.values["objective"] = objective["value"]
        job.objective = objective.get("name")
    wall = summary.get("wall_seconds", summary.get("train_seconds"))
    if _is_number(wall):
        job.values["wall_seconds"] = wall
    return job


def _dict(summary: dict, key: str) -> dict:
    value = summary.get(key)
    return value if isinstance(value, dict) else {}


def _read_overrides(path: Path) -> list[str]:
    try:
        overrides = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in overrides] if isinstance(overrides, list) else []


def _last_logged_step(job_dir: Path) -> int | None:
    """The step of the last complete row of metrics.jsonl: how far an unfinished job got."""
    try:
        lines = (job_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            step = json.loads(line).get("step")
        except (ValueError, AttributeError):
            continue  # a row cut short by a kill
        if _is_number(step):
            return int(step)
    return None


def _is_number(value: object) -> bool:
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


def sort_jobs(jobs: list[Job], metric: str) -> list[Job]:
    """Best first by `metric`; jobs without it (failed, unfinished) last, in job order."""
    key = resolve_metric(metric, jobs)
    descending = higher_is_better(key, jobs)
    has, lacks = [], []
    for job in jobs:
        (lacks if math.isnan(job.values.get(key, math.nan)) else has).append(job)
    return sorted(has, key=lambda j: j.values[key], reverse=descending) + lacks


def split_overrides(jobs: list[Job]) -> tuple[list[str], list[str]]:
    """The override keys whose value differs between jobs (one column each), and the overrides
    every job has alike."""
    parsed = [dict(_key_value(o) for o in job.overrides) for job in jobs]
    keys = list(dict.fromkeys(k for overrides in parsed for k in overrides))
    varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
    shared = [o for o in jobs[0].overrides if _key_value(o)[0] not in varying] if jobs else []
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


def make_table(jobs: list[Job], keys: list[str], sweep_dir: Path, sort: str | None):
    """The rich table, and the width it needs to show every cell whole (headers may wrap)."""
    from rich.table import Table
    from rich.text import Text

    varying, shared = split_overrides(jobs)
    overrides = [dict(_key_value(o) for o in job.overrides) for job in jobs]
    notes: list[str] = []  # the caption's lines
    # A number that is the same in every job (a sample count, a calibration point) goes into
    # the caption, as shared overrides do; the CSV keeps every column.
    same = {}
    if len(jobs) > 1:
        for key in keys:
            values = {job.values.get(key) for job in jobs}
            if len(values) == 1 and None not in values:
                same[key] = values.pop()
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
    # The best objective in bold. Other columns have no plain best: losses, counts, and
    # moments, whose best is the one nearest a target.
    best = _best(jobs, "objective")
    bold_key = objective_key if objective_key in keys else "objective"

    # (header, cells, right-aligned) per column
    columns = [
        ("job", [Text(job.name) for job in jobs], False),
        ("status", [Text(j.status, "" if j.status == "completed" else "red") for j in jobs], False),
        ("step", [Text("" if j.step is None else str(j.step)) for j in jobs], True),
    ]
    for key in varying:  # one column per override that differs between jobs
        columns.append((key, [Text(o.get(key, "")) for o in overrides], False))
    for key in keys:
        values = [job.values.get(key) for job in jobs]
        bold = [key == bold_key and v is not None and v == best for v in values]
        cells = [Text(_format(key, v), "bold" * b) for v, b in zip(values, bold, strict=True)]
        columns.append((labels[key], cells, True))

    order = f", best {resolve_metric(sort, jobs)} first" if sort else ""
    if shared:
        notes.insert(0, f"{'shared ' * (len(jobs) > 1)}overrides: {' '.join(shared)}")
    if same:
        notes.append(
            "the same in every job: " + ", ".join(f"{k} {_format(k, v)}" for k, v in same.items())
        )
    caption = "\n".join(notes) or None
    table = Table(
        title=Text(f"{sweep_dir}: {len(jobs)} job{'s' * (len(jobs) != 1)}{order}"),
        title_justify="left",
        caption=Text(caption) if caption else None,
        caption_justify="left",
    )
    width = len(columns) + 1  # the borders
    for header, cells, right in columns:
        # Cells are never cut, nor words of up to 16 letters in a header; longer ones wrap.
        words = [len(word) for word in header.split() if len(word) <= 16]
        min_width = max(c.cell_len for c in [*cells, Text("x" * max(words, default=1))])
        table.add_column(
            Text(header), justify="right" if right else "left", min_width=min_width, overflow="fold"
        )
        width += min_width + 2  # the padding
    for row in zip(*(cells for _, cells, _ in columns), strict=True):
        table.add_row(*row)
    return table, width


def _best(jobs: list[Job], key: str) -> float | None:
    values = [j.values[key] for j in jobs if not math.isnan(j.values.get(key, math.nan))]
    if not values:
        return None
    return max(values) if higher_is_better(key, jobs) else min(values)


def _format(key: str, value: float | None) -> str:
    if value is None:
        return ""
    if key == "wall_seconds":
        if value < 60:
            return f"{value:.1f} s"
        minutes, seconds = divmod(round(value), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
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
                writer.writerow([*row, job.error])
    except OSError as e:
        raise GantoolError(f"cannot write {path}: {e.strerror or e}") from e
    return path
