"""Everyday use: any run length, resumes that never harm a run, one process per run folder,
and start-up errors that write nothing."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (
    CUDA,
    FAST,
    compose_config,
    digest,
    mnist_overrides,
    run_cli,
    run_main,
    write_tiny_mnist,
)
from gantool.app import job
from gantool.app.job import train
from gantool.core.errors import ConfigError, GantoolError
from gantool.core.files import MetricsLog
from gantool.runtime.distributed import check_gpus
from gantool.training.checkpointer import latest_checkpoint, list_checkpoints
from gantool.training.codec import load as load_checkpoint
from gantool.training.run_folder import RunFolder, Summary

# --- any run length ---------------------------------------------------------------------------
# The real configs with their own intervals, made quick where that changes nothing of interest.
QUICK_EVAL = ["device=cpu", "trainer.num_eval_samples=1000"]
DATASETS = {
    "gaussian": [],
    "mnist": ["dataset=mnist", "trainer.eval_at_end=false"],
    "seed_gaussian": ["experiment=seed_gaussian", "trainer.batch_size=16"],
    "seed_mnist": ["experiment=seed_mnist", "trainer.eval_at_end=false"],
    "keras_mnist": ["experiment=keras_mnist", "trainer.eval_at_end=false"],
}


def assert_complete_run(run: Path, step: int) -> None:
    """A run folder with everything a finished run leaves: the last step always logs a row,
    draws a sample image and writes a checkpoint, whatever the intervals."""
    assert [p.name for p in list_checkpoints(run)][-1] == f"step_{step:07d}.pt"
    assert (run / "checkpoints" / "last.pt").is_file()
    assert (run / "samples" / f"step_{step:07d}.png").is_file()
    assert (run / "samples" / "progress.gif").is_file()
    assert (run / "plots" / "losses.png").is_file()
    assert MetricsLog(run / "metrics.jsonl").rows()[-1]["step"] == step
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == step


@pytest.mark.parametrize("steps", [1, 7, 50])
@pytest.mark.parametrize("name", list(DATASETS))
def test_any_number_of_steps_with_the_default_intervals(tmp_path: Path, name: str, steps: int):
    if name == "seed_gaussian" and steps == 50:
        pytest.skip("20 D and 20 G updates a step: 7 steps show the same")
    data = write_tiny_mnist(tmp_path / "data", num=128)
    mnist = [f"dataset.root={data}", "dataset.split=test", "dataset.download=false"]
    overrides = [*DATASETS[name], *QUICK_EVAL, f"trainer.steps={steps}"]
    if "mnist" in name:
        overrides += [*mnist, "trainer.batch_size=16"]
    cfg = compose_config(overrides)
    assert cfg.trainer.sample_every > steps or steps == 50  # the default intervals
    train(cfg, tmp_path / "run")
    assert_complete_run(tmp_path / "run", steps)


def test_one_epoch_of_mnist_with_the_default_intervals(tmp_path: Path) -> None:
    data = write_tiny_mnist(tmp_path / "data", num=128)
    mnist = [f"dataset.root={data}", "dataset.split=test", "dataset.download=false"]
    cfg = compose_config(["dataset=mnist", *mnist, "trainer.epochs=1", "trainer.eval_at_end=false"])
    assert cfg.trainer.steps is None
    train(cfg, tmp_path / "run")
    assert_complete_run(tmp_path / "run", 128 // 64)


def test_intervals_are_still_checked_for_range() -> None:
    with pytest.raises(ConfigError, match=r"trainer.sample_every=0: must be >= 1"):
        compose_config(["trainer.sample_every=0"])


# --- resumes that never harm a run ------------------------------------------------------------
REFUSED_RESUMES = [
    (["model.latent_dim=8"], 1, "model.latent_dim (16 -> 8)"),
    (["dataset.mean=5"], 1, "dataset.mean (4.0 -> 5.0)"),
    (["optimizer.d.name=sgd"], 1, "optimizer.d.name (adam -> sgd)"),
    (["optimizer.g.lr=abc"], 2, "optimizer.g.lr"),
    (["trainer.stepz=9"], 2, "trainer.stepz: no such key"),
    (["trainer.steps=0"], 2, "trainer.steps=0: must be >= 1"),
    pytest.param(
        ["device=cuda"],
        2,
        "device=cuda: not available",
        marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA"),
    ),
]


@pytest.mark.parametrize(("overrides", "code", "message"), REFUSED_RESUMES)
def test_a_refused_resume_changes_no_byte(finished_run, capsys, overrides, code, message) -> None:
    before = digest(finished_run)
    assert run_main("resume", str(finished_run), *overrides) == code
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert digest(finished_run) == before


@pytest.mark.parametrize("steps", [3, 6])
def test_resuming_to_a_step_already_reached_does_nothing(finished_run, capsys, steps) -> None:
    before = digest(finished_run)
    assert run_main("resume", str(finished_run), f"trainer.steps={steps}") == 0
    out = capsys.readouterr().out.strip()
    assert out == f"{finished_run} is already at step 6 (trainer.steps={steps}): nothing to do"
    assert digest(finished_run) == before


# Each family with a length in epochs where it has them (a finite set), in steps where not.
FINISHED = {
    "gaussian": [],
    "mixture": [
        "dataset=mixture",
        "dataset.num_samples=96",
        "trainer.steps=null",
        "trainer.epochs=2",
    ],
    "ring": ["dataset=ring", "dataset.num_samples=96", "trainer.steps=null", "trainer.epochs=2"],
    "mnist": ["trainer.steps=null", "trainer.epochs=2"],
    "vectors": ["dataset=vectors", "trainer.steps=null", "trainer.epochs=2"],
}


@pytest.mark.parametrize("pack", [1, 2])
@pytest.mark.parametrize("name", list(FINISHED))
def test_a_finished_run_resumed_to_its_own_length_changes_no_byte(
    tmp_path: Path, monkeypatch, capsys, name: str, pack: int
) -> None:
    """gantool 0.1 divided the stream's epoch by trainer.batch_size, not by the batch of
    batch_size x pack rows it reads: a packed run in epochs looked unfinished, and resume wrote
    into the run folder before the trainer found nothing to do."""
    monkeypatch.chdir(tmp_path)
    args = [*FAST, *FINISHED[name], f"model.d.pack={pack}", "trainer.batch_size=8"]
    args += ["trainer.eval_at_end=false", "trainer.num_samples=16"]
    if name == "mnist":
        args = mnist_overrides(write_tiny_mnist(tmp_path / "data"), *args)
    if name == "vectors":
        rows = np.random.default_rng(0).normal(size=(48, 2))
        np.savetxt(tmp_path / "rows.csv", rows, delimiter=",")
        args.append("dataset.path=rows.csv")
    run = tmp_path / "run"
    assert run_main("train", *args, f"hydra.run.dir={run}") == 0
    before = digest(run)
    capsys.readouterr()
    assert run_main("resume", str(run)) == 0
    assert capsys.readouterr().out.strip().endswith("nothing to do")
    assert digest(run) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89\xff\xfe not text", "is damaged: it is not UTF-8 text"),
        (b"", "is empty"),
        (b"{a: 1}", "expected a list of overrides"),
    ],
    ids=["not-utf8", "empty", "not-a-list"],
)
def test_a_damaged_overrides_file_is_one_line(finished_run, tmp_path, capsys, content, message):
    run = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(finished_run), str(run)], check=True)
    (run / ".hydra" / "overrides.yaml").write_bytes(content)
    before = digest(run)
    assert run_main("resume", str(run)) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert digest(run) == before


def test_a_failed_resume_keeps_the_completed_summary(tmp_path: Path, capsys) -> None:
    folder = RunFolder(tmp_path)
    done = Summary("completed", str(tmp_path), 6, 0.0, 1.0, 2.0, "", {}, {"eval/w1": 0.1}, {}, {})
    folder.write_summary(done)
    folder.record_end("failed", "training diverged")
    assert json.loads(folder.summary.read_text())["eval"] == {"eval/w1": 0.1}
    assert json.loads(folder.failure.read_text()) == {
        "status": "failed",
        "error": "training diverged",
    }
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("[]\n")
    assert run_main("report", str(tmp_path)) == 0
    shown = capsys.readouterr().out
    assert "completed" in shown and "a later resume failed: training diverged" in shown
    folder.write_summary(dataclasses.replace(done, step=9))  # a later resume completed
    assert not folder.failure.exists()
    fresh = RunFolder(tmp_path / "fresh")
    fresh.path.mkdir()
    fresh.record_end("interrupted", "SIGINT at step 3")
    assert json.loads(fresh.summary.read_text())["status"] == "interrupted"


# --- start-up errors write nothing ------------------------------------------------------------
def test_a_start_up_error_creates_no_run_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_main("train", "dataset.std=-1") == 2
    assert run_main("train", "trainer.steps=0", "device=cpu") == 2
    assert "must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()


def test_train_into_a_folder_holding_a_run_is_refused(finished_run, capsys) -> None:
    before = digest(finished_run)
    assert run_main("train", *FAST, f"hydra.run.dir={finished_run}") == 2
    assert f"gantool resume {finished_run}" in capsys.readouterr().err
    assert run_main("train", *FAST, "hydra.run.dir=") == 2
    assert "hydra.run.dir is empty" in capsys.readouterr().err
    assert digest(finished_run) == before


# --- one process per run folder ---------------------------------------------------------------
HOLD_LOCK = """
import sys, time
from gantool.training.run_folder import RunFolder, Summary
with RunFolder(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_process_on_a_run_folder_is_refused(finished_run, tmp_path, capsys) -> None:
    run = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(finished_run), str(run)], check=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = digest(run)
        assert run_main("resume", str(run), "trainer.steps=9") == 1
        err = capsys.readouterr().err
        assert f"{run} is in use: process {holder.pid} is training in it" in err
        with pytest.raises(GantoolError, match="is in use"):
            train(compose_config([*FAST, "trainer.steps=9"]), run)
        assert digest(run) == before
    finally:
        holder.kill()
        holder.wait()
    # Once the holder is gone (even killed), the folder is free again.
    assert train(compose_config([*FAST, "trainer.steps=9"]), run)["step"] == 9


def test_resume_while_the_run_trains_is_refused_and_harms_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["device=cpu", "trainer.steps=100000", "trainer.checkpoint_every=20"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gantool", "train", *args, f"hydra.run.dir={run}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not list_checkpoints(run) and time.monotonic() < deadline:
            time.sleep(0.05)
        resumed = run_cli("resume", str(run), cwd=tmp_path)
        assert resumed.returncode == 1
        assert f"process {proc.pid} is training in it" in resumed.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    steps = [r["step"] for r in MetricsLog(run / "metrics.jsonl").rows()]
    assert steps == sorted(set(steps))  # no duplicate or out-of-order rows
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"


# --- faults -------------------------------------------------------------------------------------
def test_a_metrics_row_cut_short_is_dropped_on_resume(tmp_path: Path, caplog) -> None:
    run = tmp_path / "run"
    train(compose_config(FAST), run)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 8, "train/d_lo')  # a full disk stopped the write here
    train(compose_config([*FAST, "trainer.steps=9"]), run)
    assert "line 4 is not a complete row" in caplog.text
    assert [r["step"] for r in MetricsLog(run / "metrics.jsonl").rows()] == [2, 4, 6, 8, 9]


def test_a_full_disk_says_so(tmp_path: Path, monkeypatch) -> None:
    import shutil

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 0))
    with pytest.raises(GantoolError, match=r"step_0000003\.pt: the disk is full$"):
        train(compose_config(FAST), tmp_path)


CTRL_C_IN_EVALUATION = """
import sys
import gantool.training.finish
def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
gantool.training.finish.evaluate = interrupted
from gantool.app.cli import main
main(["train", *sys.argv[1:]])
"""


def test_ctrl_c_in_the_evaluation_is_one_line_and_an_interrupted_summary(tmp_path: Path):
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_IN_EVALUATION, *FAST, f"hydra.run.dir={run}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 130, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"gantool eval {run}" in lines[0]
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    assert load_checkpoint(latest_checkpoint(run)).step == 6


CTRL_C_IN_IMPORTS = """
import builtins
real = builtins.__import__
def interrupted(name, *args, **kwargs):
    if name == "hydra":
        raise KeyboardInterrupt
    return real(name, *args, **kwargs)
builtins.__import__ = interrupted
from gantool.app.cli import main
main(["train"])
"""


def test_ctrl_c_during_the_imports_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CTRL_C_IN_IMPORTS)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 130
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "outputs").exists()


# --- GPU machines ----------------------------------------------------------------------------
def test_more_processes_than_gpus_is_refused_before_any_group_starts() -> None:
    check_gpus(1, 1)
    with pytest.raises(ConfigError, match="started 2 processes on this machine but it has 1 GPU:"):
        check_gpus(2, 1)


# --- sweeps and threads --------------------------------------------------------------------------
def test_a_sweeper_minimises_the_distance_to_a_target() -> None:
    targets = {"eval/std": 1.25, "eval/w1": 0.0}
    assert job.sweep_objective({"name": "eval/std", "value": 1.0}, targets) == 0.25
    assert job.sweep_objective({"name": "eval/std", "value": 1.5}, targets) == 0.25
    assert job.sweep_objective({"name": "eval/fld", "value": 7.0}, targets) == 7.0
    assert job.sweep_objective({"name": "eval/std", "value": None}, targets) is None


def test_auto_threads_leave_busy_cores_alone(monkeypatch) -> None:
    from gantool.runtime import threads

    monkeypatch.setattr(threads, "TORCH_THREADS", 8)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 8)
    assert threads.cpu_threads(3, 10**6) == 3  # asked for
    assert threads.cpu_threads(0, 1000) == 1  # a small model
    for busy, expected in ((0, 8), (6, 2), (30, 1)):  # idle, most cores busy, overloaded
        monkeypatch.setattr(threads, "busy_cores", lambda cores, busy=busy: busy)
        assert threads.cpu_threads(0, 10**6) == expected
    monkeypatch.setattr(threads, "TORCH_THREADS", 4)  # a joblib worker: OMP_NUM_THREADS=4
    monkeypatch.setattr(threads, "busy_cores", lambda cores: 4)  # the other worker
    assert threads.cpu_threads(0, 10**6) == 4


def test_busy_cores_reads_the_machine_now_not_a_minute_ago(monkeypatch) -> None:
    """Two cores: one spent the sampled interval busy, the other idle."""
    from gantool.runtime import threads

    samples = iter([(1000, 4000), (1010, 4020)])  # busy, total jiffies since boot
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: None)
    assert threads.busy_cores(2) == 1
