"""The `gantool` command as a user runs it: subcommands, Hydra's flags, sweeps, and bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CUDA, FAST, assert_sweep_with_a_failed_job, only_run_dir, run_cli, run_main
from gantool.app.preflight import merge_overrides
from gantool.core.files import MetricsLog


def test_help_is_fast_and_imports_no_torch() -> None:
    code = (
        "import sys; from gantool.app.cli import main; main(['--help']); "
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for command in ("train", "resume", "sample"):
        assert command in done.stdout


def test_hydra_flags_keep_working(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_main("train", "--cfg", "job", "dataset=mnist") == 0
    job = capsys.readouterr().out
    assert "latent_dim: 100" in job and "split: train" in job
    assert run_main("train", "--help") == 0
    helped = capsys.readouterr().out
    listed = next(line for line in helped.splitlines() if line.startswith("experiment:"))
    assert {"keras_mnist", "seed_gaussian", "seed_mnist"} <= set(listed[12:].split(", "))
    assert not (tmp_path / "outputs").exists()


def test_train_then_sample(tmp_path: Path) -> None:
    # `gantool resume` runs in test_trust.py, after each kill.
    trained = run_cli("train", *FAST, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    run = only_run_dir(tmp_path / "outputs")
    assert "Run folder" in trained.stdout and "KS statistic" in trained.stdout
    log = (run / "train.log").read_text()
    assert log.count("Training on the Gaussian N(4, 1.25²) for 6 steps") == 1
    assert [r["step"] for r in MetricsLog(run / "metrics.jsonl").rows()] == [2, 4, 6]

    out = tmp_path / "values.csv"
    sampled = run_cli("sample", str(run), "--num", "300", "--out", str(out), cwd=tmp_path)
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.startswith(f"Wrote {out} ")
    assert len(out.read_text().splitlines()) == 301


def test_multirun_gives_each_job_its_own_folder_and_survives_a_failing_job(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    done = run_cli(
        "train",
        "-m",
        "dataset.std=1.25,-1,2",
        *FAST,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        timeout=240,
    )
    assert (sweep / "0" / "metrics.jsonl").is_file()
    # The sweep fails as a whole; Hydra adds a line of its own before ours.
    assert_sweep_with_a_failed_job(sweep, done)
    # It still says where the jobs are and how to compare them.
    assert f"Compare its jobs: gantool report {sweep}" in done.stdout


BAD_INPUTS = [
    (["train", "optimizer.g.lr=0"], 2, "optimizer.g.lr=0.0: must be > 0"),
    (["train", "optimizer.d.lr=nan"], 2, "optimizer.d.lr=nan: must be a finite number"),
    (["train", "trainer.batch_size=0"], 2, "trainer.batch_size=0: must be >= 1"),
    (["train", "dataset.std=-1"], 2, "dataset.std=-1.0: must be > 0"),
    (["train", "model.g.activation=gelu"], 2, "model.g.activation='gelu' is not a choice"),
    pytest.param(
        ["train", "device=cuda"],
        2,
        "device=cuda: not available on this machine",
        marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA"),
    ),
    (["train", "device.num_threads=-1"], 2, "device.num_threads=-1: must be >= 0"),
    (
        ["train", "optimizer.g.lrr=1"],
        2,
        "optimizer.g.lrr: no such key (did you mean optimizer.g.lr?)",
    ),
    (["train", "+foo=1"], 2, "foo: no such key; known keys: dataset, model"),
    (
        ["train", "trainer.batch_size=abc"],
        2,
        "trainer.batch_size: Value 'abc' of type 'str' could not be converted to Integer",
    ),
    (["train", "model.g.hidden=[1,"], 2, "cannot parse the override 'model.g.hidden=[1,'"),
    (
        ["train", "dataset=imagenet"],
        2,
        "dataset=imagenet is not a choice: expected one of ",
    ),
    (["train", "dataset.root=data"], 2, "dataset.root: no such key; dataset has name, mean, std"),
    (
        [
            "train",
            "trainer.steps=4",
            "trainer.log_every=2",
            "trainer.sample_every=2",
            "trainer.checkpoint_every=2",
            "model.g.hidden=[1000000000000]",
        ],
        2,
        "this run needs at least",
    ),
    (["train", "hydra.run.dir=/dev/null/run"], 1, "cannot write /dev/null/run"),
    (["resume", "nowhere"], 1, "is not a gantool run folder"),
    (["sample", "nowhere.pt"], 1, "nowhere.pt: no such checkpoint file or run folder"),
    (["fit"], 1, "unknown command 'fit'"),
]


@pytest.mark.parametrize(("args", "code", "message"), BAD_INPUTS, ids=lambda v: str(v)[:60])
def test_bad_input_gives_one_clear_error(tmp_path: Path, monkeypatch, capsys, args, code, message):
    """In this process, as `gantool ARGS` runs it (test_train_then_sample runs the command)."""
    monkeypatch.chdir(tmp_path)
    assert run_main(*args) == code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in out
    assert list(tmp_path.iterdir()) == []  # refused: nothing written


def test_missing_mnist_names_the_folder_and_files(tmp_path: Path) -> None:
    done = run_cli(
        "train", "dataset=mnist", "dataset.root=nowhere", "dataset.download=false", cwd=tmp_path
    )
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: MNIST train split not found in ")
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in done.stderr
    assert "train-images-idx3-ubyte" in done.stderr and "train-labels-idx1-ubyte" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "outputs").exists()  # refused before a run folder was made


def test_resume_overrides_replace_the_saved_ones() -> None:
    old = ["dataset=mnist", "trainer.steps=100", "+extra=1"]
    new = ["trainer.steps=200", "extra=2"]
    assert merge_overrides(old, new) == ["dataset=mnist", "trainer.steps=200", "extra=2"]


def test_a_plugin_left_out_names_the_extra_that_brings_it(tmp_path: Path) -> None:
    try:
        import hydra_plugins.hydra_optuna_sweeper  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the optuna sweeper is installed here")
    done = run_cli("train", "-m", "hydra/sweeper=optuna", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        "hydra/sweeper=optuna is not a choice: expected one of basic "
        "(it comes with pip install 'gantool[optuna]')"
    )
