"""A run folder from anywhere never runs code, and a refused command writes nothing: stored
overrides, the lock file, damaged checkpoints, files that are not files, racing and sweeping
into folders that hold runs, bad sizes, and outputs onto a run's own files."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import FAST, digest, run_cli, run_main, write_tiny_mnist
from gantool.training.checkpointer import latest_checkpoint
from gantool.training.run_folder import RunFolder


@pytest.fixture
def run(finished_run: Path, tmp_path: Path) -> Path:
    """A copy of the finished run to change."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy, symlinks=True)
    return copy


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# --- 1. a run folder is data, never code ---------------------------------------------------------
CALLBACK = "+hydra.callbacks.x"
ATTACKS = {
    "callback opening a file": [
        f"{CALLBACK}._target_=builtins.open",
        f"{CALLBACK}.file={{victim}}",
        f"{CALLBACK}.mode=w",
    ],
    "Path.touch": [f"{CALLBACK}._target_=pathlib.Path.touch", f"{CALLBACK}.self={{victim}}"],
    "logging handler": ["hydra.job_logging.handlers.file.filename={victim}"],
    "object in a key of gantool's": ["model._target_=builtins.exec"],
    "key outside the schema": ["+trainer.shell=ls"],
    "interpolation": ["dataset.mean=${{oc.env:HOME}}"],
}


@pytest.mark.parametrize("lines", list(ATTACKS.values()), ids=list(ATTACKS))
def test_stored_overrides_beyond_gantools_settings_are_refused(run, tmp_path, capsys, lines):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    stored = run / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(stored.read_text()) + [line.format(victim=victim) for line in lines]
    stored.write_text(yaml.safe_dump(overrides))
    before = digest(run)
    assert run_main("resume", str(run), "trainer.steps=9") == 2
    line = one_line(capsys)
    assert f"{stored} line {len(overrides) - len(lines) + 1}: " in line and "refused" in line
    assert victim.read_text() == "precious" and not (tmp_path / "victim.txt.x").exists()
    assert digest(run) == before


def test_the_users_own_overrides_are_theirs(run, capsys) -> None:
    """Only what the folder stores is checked: a new override on the command line is not."""
    assert run_main("resume", str(run), "trainer.steps=9", "+hydra.job.env_set.X=1") == 0


@pytest.mark.parametrize("kind", ["symlink", "folder", "fifo"])
def test_a_lock_that_is_not_a_regular_file_is_one_line(run, tmp_path, capsys, kind) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    lock = run / ".lock"
    lock.unlink(missing_ok=True)
    if kind == "symlink":
        lock.symlink_to(victim)
    elif kind == "folder":
        lock.mkdir()
    else:
        os.mkfifo(lock)
    before = digest(run)
    assert run_main("resume", str(run), "trainer.steps=9") == 1
    line = one_line(capsys)
    assert ".lock is not a regular file" in line or ".lock is not a lock file" in line
    assert victim.read_text() == "precious" and digest(run) == before


def damage(path: Path, how: str) -> None:
    state = torch.load(path, weights_only=True)
    if how == "a tensor of the wrong shape":
        weights = state["gan"]["generator"]
        name = next(iter(weights))
        weights[name] = torch.zeros(3, 3)
    elif how == "no discriminator":
        del state["gan"]["discriminator"]
    else:
        del state["rng"][0]["python"]
    torch.save(state, path)


HOW = ["a tensor of the wrong shape", "no discriminator", "an rng without python's state"]


@pytest.mark.parametrize("how", HOW)
def test_a_damaged_newest_checkpoint_is_passed_over(run, tmp_path, capsys, caplog, how) -> None:
    newest = latest_checkpoint(run)
    damage(newest, how)
    out = tmp_path / "s.png"
    assert run_main("sample", str(run), "--out", str(out), "--device", "cpu") == 0
    assert "step 3" in capsys.readouterr().out and out.is_file()  # the previous checkpoint
    assert "step_0000006.pt is damaged" in caplog.text
    assert run_main("resume", str(run), "trainer.steps=9") == 0  # sets it aside, goes on from 3
    assert newest.with_name(newest.name + ".corrupt").is_file()
    assert json.loads((run / "summary.json").read_text())["step"] == 9


# In this process: a FIFO read by mistake would hang the test run, which is the bug it shows.
def test_a_fifo_named_like_a_checkpoint_never_blocks(run, tmp_path, capsys, caplog) -> None:
    os.mkfifo(run / "checkpoints" / "step_0000009.pt")
    assert run_main("sample", str(run), "--out", str(tmp_path / "s.png"), "--device", "cpu") == 0
    assert "step_0000009.pt" in caplog.text and "step 6" in capsys.readouterr().out


def test_data_that_is_not_a_regular_file_is_refused(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "rows.csv")
    assert run_main("train", "dataset=vectors", "dataset.path=rows.csv") == 1
    assert "rows.csv is not a regular file" in one_line(capsys)
    assert not (tmp_path / "outputs").exists()


def test_report_never_blocks_on_a_fifo(run, capsys) -> None:
    (run / "summary.json").unlink()
    os.mkfifo(run / "summary.json")
    assert run_main("report", str(run)) == 0
    assert "is not a regular file" in " ".join(capsys.readouterr().out.split())


# --- 2. a refused command writes nothing ----------------------------------------------------------
def test_two_trains_into_one_folder_leave_the_winners_record(tmp_path) -> None:
    folder = tmp_path / "D"
    args = ["device=cpu", "trainer.steps=200", "trainer.eval_at_end=false"]
    args.append(f"hydra.run.dir={folder}")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gantool", "train", *args, f"trainer.seed={seed}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] in (1, 2), results
    winner = 1 + [code for code, _ in results].index(0)
    refused = next(err for code, err in results if code)
    assert "is in use" in refused or "already holds a run" in refused
    assert f"trainer.seed={winner}" in (folder / ".hydra" / "overrides.yaml").read_text()
    resumed = run_cli("resume", str(folder), cwd=tmp_path)
    assert resumed.returncode == 0 and "nothing to do" in resumed.stdout


def test_train_into_a_folder_in_use_names_the_process(run, tmp_path) -> None:
    with RunFolder(run).lock():  # held by this process
        done = run_cli("train", *FAST, f"hydra.run.dir={run}", cwd=tmp_path)
    assert done.returncode == 1 and f"is in use: process {os.getpid()}" in done.stderr


def test_a_sweep_into_folders_that_hold_runs_is_refused(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "S"
    args = ["-m", *FAST, "trainer.eval_at_end=false", "trainer.seed=0,1"]
    args.append(f"hydra.sweep.dir={sweep}")
    assert run_main("train", *args) == 0
    assert "[job 1] Training on" in capsys.readouterr().out  # parallel jobs' lines say whose
    before = digest(sweep)
    assert run_main("train", *args) == 2
    err = capsys.readouterr().err
    assert "job 0" in err and "job 1" in err and f"gantool resume {sweep / '0'}" in err
    assert digest(sweep) == before


def test_a_sweep_job_into_a_finished_run_is_refused(run, capsys) -> None:
    before = digest(run)
    args = ["-m", *FAST, "trainer.seed=5", f"hydra.sweep.dir={run}", "hydra.sweep.subdir=."]
    assert run_main("train", *args) == 2
    assert "already holds a run" in one_line(capsys)
    assert digest(run) == before


@pytest.mark.parametrize(
    "args",
    [
        ["dataset=ring", "dataset.num_samples=50", "trainer.batch_size=100"],
        ["dataset=vectors", "dataset.path=rows.csv", "trainer.batch_size=8"],
        ["dataset=mnist", "dataset.root=data", "dataset.split=test", "trainer.batch_size=10**8"],
        ["model.g.hidden=[100000,100000]"],  # 10 billion parameters: out of memory at build
    ],
    ids=["ring", "vectors", "mnist", "huge model"],
)
def test_a_size_too_large_is_a_bad_setting(tmp_path, monkeypatch, capsys, args) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.csv").write_text("1,2\n3,4\n5,6\n7,8\n9,10\n")
    write_tiny_mnist(tmp_path / "data")
    args = [a.replace("10**8", "100000000") for a in args]
    assert run_main("train", *args, "trainer.steps=2") == 2
    line = one_line(capsys)
    assert "larger than" in line or "needs at least" in line
    assert not (tmp_path / "outputs").exists()


RUN_FILES = ["summary.json", "metrics.jsonl", "train.log", ".hydra/config.yaml"]


@pytest.mark.parametrize("name", RUN_FILES)
def test_outputs_never_go_onto_the_runs_own_files(run, capsys, name) -> None:
    before = digest(run)
    assert run_main("eval", str(run), "--out", str(run / name), "--device", "cpu") == 2
    assert run_main("sample", str(run), "--out", str(run / name), "--device", "cpu") == 2
    assert digest(run) == before


@pytest.mark.parametrize("value", ["2", "yes", "0"])
def test_booleans_are_true_or_false(tmp_path, capsys, value) -> None:
    assert run_main("train", *FAST, f"trainer.reuse_fake={value}") == 2
    assert "trainer.reuse_fake" in one_line(capsys) and not (tmp_path / "outputs").exists()


# --- 3. signals and full disks -------------------------------------------------------------------
SIGTERM_AT = """
import os, signal, sys, time
import gantool.training.finish, gantool.training.loop
def terminated(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
if sys.argv[1] == "evaluation":
    gantool.training.finish.evaluate = terminated
else:
    gantool.training.loop.Run.resume = terminated
from gantool.app.cli import main
main(["train", *sys.argv[2:]])
"""


@pytest.mark.parametrize("moment", ["start-up", "evaluation"])
def test_sigterm_outside_the_loop_is_one_line_and_a_summary(tmp_path, moment) -> None:
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", SIGTERM_AT, moment, *FAST, f"hydra.run.dir={run}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stopped: SIGTERM"), done.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"


def test_a_full_disk_at_the_start_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    import gantool.core.files

    def full(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gantool.core.files, "atomic_write", full)
    assert run_main("train", *FAST, f"hydra.run.dir={tmp_path / 'run'}") == 1
    err = capsys.readouterr().err
    assert "the disk is full" in err and "Logging error" not in err and "Traceback" not in err
    assert not (tmp_path / "run" / ".hydra").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--bogus"], 2, "unrecognized arguments: --bogus"),
        (["--device", "tpu"], 2, "invalid choice: 'tpu'"),
        (["--out", "/proc/gantool", "--gaussian-seeds", "0"], 1, "cannot write into --out"),
    ],
)
def test_bench_refuses_in_one_line(capsys, args, code, message) -> None:
    assert run_main("bench", *args) == code
    assert message in one_line(capsys)


# --- 4. measurements users can reproduce ----------------------------------------------------------
def test_the_lenet_is_the_same_whatever_the_thread_count(tiny_mnist) -> None:
    from gantool.datasets import mnist
    from gantool.nn import lenet

    recipe = lenet.Recipe(steps=30, batch_size=16)
    _, train_split, heldout = mnist.training_data(tiny_mnist, recipe)
    nets = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            net, _ = lenet.train_lenet(train_split, heldout, torch.device("cpu"), recipe)
            nets.append(lenet.weights_digest(net))
    finally:
        torch.set_num_threads(threads)
    assert nets[0] == nets[1] and torch.get_num_threads() == threads


# --- 5. frictions -------------------------------------------------------------------------------
def test_offline_mnist_suggests_the_split_that_is_there(tmp_path, monkeypatch, capsys) -> None:
    """The test split is there, the train split is asked for, and the download fails (no
    network): one line that says so and names dataset.split=test; no folder, no empty raw/."""
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    monkeypatch.chdir(tmp_path)
    write_tiny_mnist(tmp_path / "data", split="test")
    assert run_main("train", "dataset=mnist", "dataset.root=data") == 1
    line = one_line(capsys)
    assert "the download failed" in line and "dataset.split=test" in line
    assert sorted(p.name for p in (tmp_path / "data" / "MNIST" / "raw").iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    assert not (tmp_path / "outputs").exists()


def test_a_downloads_own_folders_go_when_it_fails(tmp_path, monkeypatch, capsys) -> None:
    import torchvision.datasets

    def offline(root, train, download):
        (Path(root) / "MNIST" / "raw").mkdir(parents=True)  # as torchvision makes it first
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    monkeypatch.chdir(tmp_path)
    assert run_main("train", "dataset=mnist", "dataset.root=data") == 1
    assert "the download failed: no network" in one_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_2d_mixture_brings_an_objective_of_its_own() -> None:
    from conftest import compose_config

    plane = ["dataset.centres=[[0,0],[3,3]]", "dataset.weights=null"]
    cfg = compose_config(["dataset=mixture", *plane])
    assert cfg.trainer.objective == "eval/reverse_kl"
    assert compose_config(["dataset=mixture"]).trainer.objective == "eval/w1"  # 1-D


def test_train_help_lists_the_options_a_user_chooses(capsys) -> None:
    assert run_main("train", "--help") == 0
    groups = dict(re.findall(r"^(\w+): (.+)$", capsys.readouterr().out, re.M))
    assert groups["loss"] == "bce, hinge, lsgan, wgan_gp"
    assert groups["optimizer"] == "adam, sgd"
    assert "mnist" not in groups["model"] and "schema" not in groups


def test_the_first_line_says_what_a_run_trains_on(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["dataset=ring", "trainer.steps=2", "trainer.eval_at_end=false", "device=cpu"]
    assert run_main("train", *args, "hydra.run.dir=run") == 0
    said = "Training on a mixture of 8 Gaussians in 2-D, 100,000 points drawn once"
    assert said in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.slow
def test_a_stopped_worker_of_a_parallel_sweep_lets_the_sweep_go_on(tmp_path) -> None:
    """SIGTERM to one joblib worker (as a cluster may send it): its job stops with an
    interrupted summary, the other job completes, and the sweep exits non-zero naming it."""
    sweep = tmp_path / "S"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "device=cpu"]
    args += ["trainer.seed=0,1", "trainer.steps=4000", "trainer.eval_at_end=false"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gantool", "train", *args, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = sweep / "1" / ".lock"
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(int(lock.read_text()), signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode != 0 and "job 1" in err, err
    status = {job: json.loads((sweep / job / "summary.json").read_text())["status"] for job in "01"}
    assert status == {"0": "completed", "1": "interrupted"}
