"""Everyday frictions: progress on a terminal and in a pipe, reports that fit the terminal and
rank by the right thing, damaged job files, help, version and tab completion."""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from rich.console import Console, Group

import gantool.core.console
from conftest import FAST, only_run_dir
from gantool.app.cli import COMMANDS, main
from gantool.app.report import load_jobs, report, sort_jobs
from gantool.core.console import LogHandler, ProgressBar
from test_report import table_rows, write_job

ROW = {
    "train/d_loss": 1.234,
    "train/g_loss": 0.71,
    "train/d_real": 0.55,
    "train/d_fake": 0.45,
    "train/fake_mean": 3.98,
    "train/fake_std": 1.24,
}
STATS = "D 1.234  G 0.710  D(x) 0.55  D(G(z)) 0.45  mean 3.980  std 1.240"


# --- progress ---------------------------------------------------------------------------------


@pytest.fixture
def progress_log():
    """gantool's console log handler on the progress logger, as Hydra's job_logging sets it."""
    logger = logging.getLogger("gantool.core.console")
    handler = LogHandler(show_path=False, show_time=False)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def test_without_a_terminal_progress_is_a_plain_line_per_log_row(progress_log, capsys) -> None:
    with ProgressBar(200, 0) as bar:
        for step in range(1, 201):
            bar.update(step, ROW if step % 50 == 0 else None)
    lines = capsys.readouterr().out.splitlines()
    # No bar (no carriage returns, no cursor codes): one whole line per log row, nothing else.
    assert [line.split("  ")[0] for line in lines] == [
        "step 50/200",
        "step 100/200",
        "step 150/200",
        "step 200/200",
    ]
    assert all(STATS in line and "\r" not in line and "\x1b" not in line for line in lines)
    assert all(re.search(r"\d s elapsed, ETA [\d.]+ s$", line) for line in lines[:-1])
    assert lines[-1].endswith(" s elapsed")  # done: no ETA


def test_progress_line_eta_is_the_pace_since_start_including_a_resumed_run() -> None:
    fresh = ProgressBar(2000, 0)
    fresh.started = time.perf_counter() - 10
    assert fresh.line(100, STATS) == f"step 100/2000  {STATS}  10.0 s elapsed, ETA 3:10"
    resumed = ProgressBar(2000, 1000)  # 100 steps in 10 s, 900 to go
    resumed.started = time.perf_counter() - 10
    assert resumed.line(1100, "").endswith("10.0 s elapsed, ETA 1:30")


def render_bar(monkeypatch, width: int) -> list[str]:
    """The live bar as a terminal `width` columns wide shows it, mid-run with statistics."""
    screen = Console(width=width, force_terminal=True, file=io.StringIO(), record=True)
    monkeypatch.setattr(gantool.core.console, "console", screen)
    bar = ProgressBar(2000, 0)  # not started: no live thread, only its renderables
    bar.update(1234, ROW)
    screen.print(Group(*bar.progress.get_renderables()))
    return screen.export_text().splitlines()


@pytest.mark.parametrize("width", [80, 100])
def test_live_bar_keeps_steps_elapsed_and_eta_at_80_columns(monkeypatch, width: int) -> None:
    first, stats = render_bar(monkeypatch, width)
    assert re.fullmatch(r"step 1234/2000 \S+ \d:\d\d:\d\d < (\d:\d\d:\d\d|-:--:--)", first)
    assert stats.strip() == STATS  # the statistics on a line of their own
    assert all(len(line) <= width for line in (first, stats))


def test_live_bar_puts_the_statistics_beside_it_when_wide(monkeypatch) -> None:
    [line] = render_bar(monkeypatch, 160)
    assert line.startswith("step 1234/2000 ") and line.rstrip().endswith(STATS)
    assert len(line) <= 160


def test_piped_training_logs_progress_lines_and_does_not_wrap_paths(tmp_path: Path) -> None:
    run_dir = tmp_path / ("a-folder-with-a-long-name-" * 3) / "run"
    done = subprocess.run(
        [sys.executable, "-m", "gantool", "train", *FAST, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "60"},  # narrower than any path here
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"Run folder: {run_dir}" in done.stdout.splitlines()
    assert any(line.endswith(str(run_dir)) for line in done.stdout.splitlines())
    steps = [line.split("  ")[0] for line in done.stdout.splitlines() if line.startswith("step ")]
    assert steps == ["step 2/6", "step 4/6", "step 6/6"]
    logged = (only_run_dir(tmp_path) / "train.log").read_text()
    assert [s for s in steps if s + "  D " in logged] == steps


# --- report -----------------------------------------------------------------------------------

SHARED = [
    "trainer.steps=2000",
    "trainer.sample_every=500",
    "trainer.checkpoint_every=1000",
    "trainer.log_every=50",
    "device=cpu",
]


def gaussian_job(
    folder: Path,
    overrides: list[str],
    moments: tuple[float, float, float, float],
    objective: str = "eval/w1",
    dataset: dict | None = None,
    targets: dict | None = None,
) -> Path:
    """A finished Gaussian job as gantool leaves it, .hydra/config.yaml included."""
    mean, std, skewness, kurtosis = moments
    results = {
        "eval/num_samples": 100000,
        "eval/mean": mean,
        "eval/std": std,
        "eval/skewness": skewness,
        "eval/excess_kurtosis": kurtosis,
        "eval/ks": abs(std - 1.25) / 3 + 0.004567,
        "eval/w1": abs(mean - 4) + 0.001234,
    }
    summary = {
        "status": "completed",
        "step": 2000,
        "wall_seconds": 14.25 + mean,
        "final": {
            "step": 2000,
            "train/d_loss": 1.38 + mean / 1e3,
            "train/g_loss": 0.69 + std / 1e3,
        },
        "eval": results,
        "objective": {"name": objective, "value": results[objective]},
    }
    if targets is not None:
        summary["targets"] = targets
    write_job(folder, overrides, summary)
    if dataset is not None:
        config = {"dataset": {"name": "gaussian", **dataset}, "trainer": {"steps": 2000}}
        (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture
def four_jobs(tmp_path: Path) -> Path:
    """The 4-job sweep `optimizer.g.lr=1e-3,2e-3 model.g.activation=elu,leaky_relu`."""
    root = tmp_path / "multirun" / "2026-12-02" / "05-01-43-6019"
    settings = [(lr, act) for lr in ("0.001", "0.002") for act in ("elu", "leaky_relu")]
    moments = [
        (2.40085, 0.322435, -0.214116, -0.365926),
        (1.92028, 0.241238, -0.004703, -0.411170),
        (2.84196, 0.372293, -0.222808, -0.339132),
        (2.59147, 0.338057, -0.005035, -0.401143),
    ]
    for i, ((lr, act), m) in enumerate(zip(settings, moments, strict=True)):
        overrides = [*SHARED, f"optimizer.g.lr={lr}", f"model.g.activation={act}"]
        gaussian_job(root / str(i), overrides, m, dataset={"mean": 4.0, "std": 1.25})
    return root


def table_headers(out: str) -> list[str]:
    """Each column's header as one string, its wrapped lines joined (split tables joined)."""
    tables: list[list[list[str]]] = []
    for line in out.splitlines():
        if line.startswith("┏"):
            tables.append([])
        elif line.startswith("┃"):
            tables[-1].append([cell.strip() for cell in line.split("┃")[1:-1]])
    headers = []
    for n, lines in enumerate(tables):
        columns = [" ".join(filter(None, cells)) for cells in zip(*lines, strict=True)]
        headers += columns[1:] if n else columns  # each later table repeats the job column
    return [re.sub(r"([./]) ", r"\1", h) for h in headers]


HEADERS = [
    "job",
    "optimizer.g.lr",
    "model.g.activation",
    "d loss",
    "g loss",
    "mean",
    "std",
    "skewness",
    "excess kurtosis",
    "ks",
    "w1*",
    "wall time",
]


@pytest.mark.parametrize("width", [120, 80])
def test_report_fits_the_terminal_and_breaks_no_header_word(
    four_jobs: Path, monkeypatch, capsys, width: int
) -> None:
    monkeypatch.setattr(gantool.core.console.console, "width", width)
    report(four_jobs)
    out = capsys.readouterr().out
    table_lines = [line for line in out.splitlines() if line[:1] in "┏┃┡│└"]
    assert max(len(line) for line in table_lines) <= width
    assert sum(line.startswith("┏") for line in table_lines) == (1 if width == 120 else 2)
    assert table_headers(out) == HEADERS  # every header whole: wrapped at spaces and dots only
    rows = table_rows(out)
    assert [row[:3] for row in rows] == [
        ["0", "0.001", "elu"],
        ["1", "0.001", "leaky_relu"],
        ["2", "0.002", "elu"],
        ["3", "0.002", "leaky_relu"],
    ]
    assert rows[1][HEADERS.index("skewness")] == "-0.004703"
    # Columns that are the same in every job become a note; report.csv keeps them.
    assert "the same in every job: status completed, step 2000, eval/num_samples 100000" in out
    with (four_jobs / "report.csv").open() as f:
        header = next(csv.reader(f))
    assert {"status", "step", "eval/num_samples", "eval/ks"} <= set(header)


def test_moments_rank_by_distance_to_each_jobs_target(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    target = {"mean": 4.0, "std": 1.25}
    gaussian_job(root / "0", ["trainer.seed=0"], (3.5, 1.0, 0.3, -0.3), dataset=target)
    gaussian_job(root / "1", ["trainer.seed=1"], (4.3, 1.6, -0.2, 0.1), dataset=target)
    gaussian_job(root / "2", ["trainer.seed=2"], (3.9, 1.3, 0.1, -0.5), dataset=target)
    jobs = load_jobs(root)

    def order(metric: str) -> list[str]:
        return [job.name for job in sort_jobs(jobs, metric)]

    assert order("mean") == ["2", "1", "0"]  # |Δ| 0.1, 0.3, 0.5 (raw ascending: 0, 2, 1)
    assert order("eval/std") == ["2", "0", "1"]  # |Δ| 0.05, 0.25, 0.35
    assert order("skewness") == ["2", "1", "0"]  # |0.1| < |-0.2| < |0.3|
    assert order("excess_kurtosis") == ["1", "0", "2"]
    assert order("w1") == ["2", "1", "0"]  # no target: lower is better, as before


def test_targets_come_from_each_job_and_an_unknown_target_ranks_last(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    # A sweep over dataset.std with the objective eval/std: each job has its own target.
    for name, std, got in (("0", 1.0, 1.5), ("1", 2.0, 1.9), ("2", 3.0, 2.0)):
        gaussian_job(
            root / name,
            [f"dataset.std={std}"],
            (4.0, got, 0.0, 0.0),
            objective="eval/std",
            dataset={"mean": 4.0, "std": std},
        )
    # Its summary says its targets; one more job says nothing about them.
    gaussian_job(
        root / "3", ["dataset.std=0.5"], (4.0, 0.55, 0, 0), "eval/std", targets={"eval/std": 0.5}
    )
    gaussian_job(root / "4", ["dataset.std=9"], (4.0, 9.0, 0, 0), "eval/std")
    jobs = load_jobs(root)
    assert [j.name for j in sort_jobs(jobs, "objective")] == ["3", "1", "0", "2", "4"]
    assert [j.name for j in sort_jobs(jobs, "std")] == ["3", "1", "0", "2", "4"]


def test_a_summarys_targets_win_over_the_gaussian_defaults(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    skewed = {"eval/mean": 4.0, "eval/std": 1.25, "eval/skewness": 0.5}  # e.g. a mixture's
    for name, skewness in (("0", 0.0), ("1", 0.4)):
        gaussian_job(root / name, [f"trainer.seed={name}"], (4, 1.25, skewness, 0), targets=skewed)
    assert [j.name for j in sort_jobs(load_jobs(root), "skewness")] == ["1", "0"]


def test_report_sorted_by_a_targeted_objective_says_so_and_bolds_the_nearest(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    root = tmp_path / "sweep"
    for name, got in (("0", 1.0), ("1", 1.3), ("2", 1.7)):
        gaussian_job(
            root / name,
            [f"trainer.seed={name}"],
            (4.0, got, 0.0, 0.0),
            objective="eval/std",
            dataset={"mean": 4.0, "std": 1.25},
        )
    screen = Console(width=200, force_terminal=True, file=io.StringIO(), record=True)
    monkeypatch.setattr(gantool.core.console, "console", screen)
    report(root, "objective")
    out = screen.export_text(clear=False)
    assert "3 jobs, best objective first (nearest its target)" in out
    assert "targets: mean 4, std 1.25, skewness 0, excess kurtosis 0" in out
    assert [row[0] for row in table_rows(out)] == ["1", "0", "2"]
    bold = re.findall(r"\x1b\[1m([^\x1b]*)\x1b\[0m", screen.export_text(styles=True))
    assert [cell.strip() for cell in bold if cell.strip()[:1].isdigit()] == ["1.3"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe- trainer.seed=1\n", "it is not UTF-8 text"),
        (b"- [trainer.seed=1\n", "is damaged: "),
        (b"trainer.seed: 1\n", "expected a list of overrides"),
    ],
)
def test_a_job_with_damaged_overrides_gets_an_error_line_and_the_rest_goes_on(
    tmp_path: Path, capsys, content: bytes, problem: str
) -> None:
    root = tmp_path / "sweep"
    target = {"mean": 4.0, "std": 1.25}
    for seed in range(3):
        overrides = ["device=cpu", f"trainer.seed={seed}"]
        gaussian_job(root / str(seed), overrides, (4.0, 1.2 + seed / 10, 0, 0), dataset=target)
    (root / "1" / ".hydra" / "overrides.yaml").write_bytes(content)
    report(root)
    out = capsys.readouterr().out
    # The damaged job keeps its row and numbers; the others' overrides read as before.
    std = table_headers(out).index("std")
    assert [[row[0], row[1], row[std]] for row in table_rows(out)] == [
        ["0", "0", "1.2"],
        ["1", "?", "1.3"],
        ["2", "2", "1.4"],
    ]
    assert "shared overrides: device=cpu" in out
    [line] = [line for line in out.splitlines() if line.startswith("job 1: ")]
    assert "overrides.yaml" in line and problem in line
    with (root / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[1]["status"] == "completed" and problem in rows[1]["error"]


def test_damaged_config_and_metrics_files_do_not_stop_the_report(tmp_path: Path, capsys) -> None:
    root = tmp_path / "sweep"
    gaussian_job(root / "0", ["trainer.seed=0"], (4.2, 1.2, 0, 0), dataset={"mean": 4, "std": 1})
    (root / "0" / ".hydra" / "config.yaml").write_bytes(b"\xff\xfe")
    killed = write_job(root / "1", ["trainer.seed=1"])
    (killed / "metrics.jsonl").write_bytes(b'{"step": 10}\n\xff\xfe{"st')
    report(root, "mean")  # no target for job 0: it ranks, like job 1, last
    out = capsys.readouterr().out
    assert [row[:3] for row in table_rows(out)] == [
        ["0", "completed", "2000"],
        ["1", "unfinished", "10"],
    ]
    assert re.search(r"job 0: cannot read .*config\.yaml: .*utf-8", out)


# --- help, version, completion ------------------------------------------------------------------


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "train"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(command: str, flag: str, capsys) -> None:
    try:
        main([command, flag])
    except SystemExit as e:  # argparse's help ends with exit 0
        assert e.code == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"usage: gantool {command}")
    assert captured.err == ""


def test_train_help_is_hydras_and_resume_help_after_a_run_dir(capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["gantool"])  # run_train hands Hydra its own sys.argv
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert re.search(r"^dataset: .*gaussian.*mnist", capsys.readouterr().out, re.MULTILINE)
    main(["resume", "outputs/some/run", "--help"])  # no training starts
    assert capsys.readouterr().out.startswith("usage: gantool resume RUN_DIR [OVERRIDES]")


def test_version(capsys) -> None:
    main(["--version"])
    assert capsys.readouterr().out == f"gantool {version('gantool')}\n"
    main(["--help"])
    assert "--version" in capsys.readouterr().out


def complete(line: str, monkeypatch, capsys, point: int | None = None) -> tuple[list[str], str]:
    """What TAB offers for `line` (cursor at `point`, default its end), as bash asks for it."""
    monkeypatch.setenv("COMP_LINE", line)
    monkeypatch.setenv("COMP_POINT", str(len(line) if point is None else point))
    monkeypatch.setattr(sys, "argv", ["gantool"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    main(["-sc", "query=bash"])
    captured = capsys.readouterr()
    return captured.out.split(), captured.err


@pytest.mark.parametrize(
    ("line", "point", "choices"),
    [
        ("gantool ", None, list(COMMANDS)),
        ("gantool re", None, ["resume", "report"]),
        ("gantool --v", None, ["--version"]),
        ("gantool tr trainer.steps=5", len("gantool tr"), ["train"]),  # the cursor's word
        ("gantool train trainer.st", None, ["trainer.steps="]),  # Hydra's config completion
        ("gantool train dataset=gau", None, ["dataset=gaussian"]),
        ("gantool train -m trainer.se", None, ["trainer.seed="]),
        ("gantool resume outputs/run trainer.st", None, ["trainer.steps="]),
        ("gantool resume ", None, []),  # nothing: the shell offers file names
        ("gantool sample ", None, []),
        ("gantool report outputs/multirun --so", None, []),
        ("gantool train model.g.hidden=[1,", None, []),  # an override Hydra cannot parse
    ],
)
def test_completion(line: str, point: int | None, choices: list[str], monkeypatch, capsys) -> None:
    offered, err = complete(line, monkeypatch, capsys, point)
    assert offered == choices
    assert err == ""  # nothing lands in the command line
