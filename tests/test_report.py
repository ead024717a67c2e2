"""`gantool report`: job folders found, read, sorted and written out, on sweeps the test writes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gantool.app.cli import main
from gantool.app.report import load_jobs, report, sort_jobs
from gantool.core.errors import GantoolError

SHARED = ["trainer.steps=100", "device=cpu"]


def write_job(
    folder: Path,
    overrides: list[str],
    summary: dict | None = None,
    steps_logged: list[int] = (),
) -> Path:
    """A job folder as a gantool sweep leaves it: overrides, metrics rows, maybe a summary."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    rows = [json.dumps({"step": s, "train/d_loss": 1.0}) for s in steps_logged]
    (folder / "metrics.jsonl").write_text("".join(r + "\n" for r in rows))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def completed(d_loss: float, w1: float, precision: float, **extra) -> dict:
    """summary.json of a finished run, in the layout the trainer writes."""
    return {
        "status": "completed",
        "run_dir": "somewhere",
        "step": 100,
        "train_seconds": 50.0,
        "wall_seconds": 61.5,
        "samples": "somewhere/samples/step_0000100.png",
        "final": {"step": 100, "train/d_loss": d_loss, "train/g_loss": 0.7, "train/d_real": 0.5},
        "eval": {
            "eval/w1": w1,
            "eval/precision": precision,
            "eval/class_histogram": [1, 2, 3],  # not a scalar: no column
            **extra,
        },
        "objective": {"name": "eval/w1", "value": w1},
    }


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Five jobs: three finished, one failed, one killed (or still running) mid-way."""
    root = tmp_path / "sweep"
    write_job(root / "0", ["optimizer.g.lr=0.1", *SHARED], completed(1.3, 0.5, 0.6))
    write_job(
        root / "1",
        ["optimizer.g.lr=-1", *SHARED],
        {"status": "failed", "error": "optimizer.g.lr=-1.0: must be > 0"},
    )
    # Killed: no summary, and the last metrics row cut short.
    killed = write_job(root / "2", ["optimizer.g.lr=0.3", *SHARED], steps_logged=[10, 20])
    with (killed / "metrics.jsonl").open("a") as f:
        f.write('{"step": 30, "train/d_')
    best = completed(1.1, 0.2, 0.9, **{"eval/ks": 0.1})
    write_job(root / "10", ["optimizer.g.lr=0.2", *SHARED], best)
    older = completed(1.2, 0.3, 0.7)
    del older["wall_seconds"]  # then the training time stands in
    write_job(root / "3", ["optimizer.g.lr=0.4", *SHARED], older)
    # A job's own subfolders are never jobs, whatever they hold.
    (root / "0" / "samples").mkdir()
    (root / "0" / "samples" / "summary.json").write_text("{}")
    return root


def test_jobs_are_read_in_job_order_with_status_and_scalar_metrics(sweep: Path) -> None:
    jobs = load_jobs(sweep)
    assert [j.name for j in jobs] == ["0", "1", "2", "3", "10"]
    statuses = ["completed", "failed", "unfinished", "completed", "completed"]
    assert [j.status for j in jobs] == statuses
    first, failed, killed, older, last = jobs
    assert first.values == {
        "train/d_loss": 1.3,
        "train/g_loss": 0.7,
        "eval/w1": 0.5,
        "eval/precision": 0.6,
        "objective": 0.5,
        "wall_seconds": 61.5,
    }
    assert first.objective == "eval/w1" and first.step == 100
    assert failed.values == {} and failed.error == "optimizer.g.lr=-1.0: must be > 0"
    assert killed.values == {} and killed.step == 20  # the last complete row
    assert older.values["wall_seconds"] == 50.0
    assert last.values["eval/ks"] == 0.1


def test_report_writes_every_column_and_full_overrides_to_csv(sweep: Path, capsys) -> None:
    path = report(sweep)
    assert path == sweep / "report.csv"
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "job",
        "status",
        "step",
        "overrides",
        "train/d_loss",
        "train/g_loss",
        "eval/w1",
        "eval/precision",
        "eval/ks",  # only job 10 has it; it still gets a column
        "objective",
        "wall_seconds",
        "objective_name",
        "error",
    ]
    assert [r["job"] for r in rows] == ["0", "1", "2", "3", "10"]
    assert rows[0]["overrides"] == "optimizer.g.lr=0.1 trainer.steps=100 device=cpu"
    assert float(rows[4]["eval/w1"]) == 0.2 and rows[4]["objective_name"] == "eval/w1"
    assert rows[1]["eval/w1"] == "" and rows[1]["error"] == "optimizer.g.lr=-1.0: must be > 0"
    assert rows[2]["status"] == "unfinished" and rows[2]["step"] == "20"

    out = capsys.readouterr().out
    # The table has a column for each override that differs; the shared ones go below it.
    assert [row[:4] for row in table_rows(out)] == [
        ["0", "completed", "100", "0.1"],
        ["1", "failed", "", "-1"],
        ["2", "unfinished", "20", "0.3"],
        ["3", "completed", "100", "0.4"],
        ["10", "completed", "100", "0.2"],
    ]
    assert "shared overrides: trainer.steps=100 device=cpu" in out
    assert "job 1 failed: optimizer.g.lr=-1.0: must be > 0" in out
    assert "class_histogram" not in out


@pytest.mark.parametrize(
    ("metric", "order"),
    [
        ("w1", ["10", "3", "0", "1", "2"]),  # ascending; jobs without it last, in job order
        ("eval/w1", ["10", "3", "0", "1", "2"]),
        ("objective", ["10", "3", "0", "1", "2"]),  # eval/w1 is lower-is-better
        ("precision", ["10", "3", "0", "1", "2"]),  # higher is better: descending
        ("d_loss", ["10", "3", "0", "1", "2"]),
        ("ks", ["10", "0", "1", "2", "3"]),  # only job 10 has it
        ("wall_seconds", ["3", "0", "10", "1", "2"]),  # a stable sort keeps 0 before 10
    ],
)
def test_sort_puts_the_best_first_and_jobs_without_the_metric_last(
    sweep: Path, metric: str, order: list[str]
) -> None:
    assert [j.name for j in sort_jobs(load_jobs(sweep), metric)] == order


def test_an_unknown_sort_metric_is_one_line_naming_the_available_ones(sweep: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(sweep), "--sort", "fid"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: --sort fid: no such metric; available: train/d_loss, train/g_loss, eval/w1, "
        "eval/precision, eval/ks, objective, wall_seconds"
    )
    assert not (sweep / "report.csv").exists()


def test_nested_sweeps_single_runs_and_empty_folders(tmp_path: Path) -> None:
    root = tmp_path / "sweeps"
    for name in ("b/0", "a/1", "a/0"):
        write_job(root / name, [f"trainer.seed={name[-1]}"], completed(1.0, 0.5, 0.5))
    assert [j.name for j in load_jobs(root)] == ["a/0", "a/1", "b/0"]

    [run] = load_jobs(root / "a" / "1")
    assert (run.name, run.overrides, run.status) == ("1", ["trainer.seed=1"], "completed")

    (tmp_path / "empty").mkdir()
    with pytest.raises(GantoolError, match="holds no gantool runs"):
        load_jobs(tmp_path / "empty")
    with pytest.raises(GantoolError, match="is not a folder"):
        load_jobs(tmp_path / "missing")


def table_rows(out: str) -> list[list[str]]:
    """The cells of each body row of a printed rich table. A table split to fit the terminal
    goes on in the next ones, each repeating the job column: their rows are joined."""
    tables: list[list[list[str]]] = []
    for line in out.splitlines():
        if line.startswith(("┏", "┌")):
            tables.append([])
        elif line.startswith("│"):
            tables[-1].append([cell.strip() for cell in line.split("│")[1:-1]])
    rows = tables[0] if tables else []
    for more in tables[1:]:
        rows = [row + extra[1:] for row, extra in zip(rows, more, strict=True)]
    return rows


def test_report_command_sorts_and_imports_no_torch(sweep: Path) -> None:
    code = (
        "import sys; from gantool.app.cli import main; "
        f"main(['report', {str(sweep)!r}, '--sort', 'precision']); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert [row[0] for row in table_rows(done.stdout)] == ["10", "3", "0", "1", "2"]
    assert "best eval/precision first" in " ".join(done.stdout.split())  # the title may wrap
    assert (sweep / "report.csv").is_file()
