"""Trust: runs survive signals, kills, corrupt files and bad numbers, and say what happened."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import FAST, compose_config, equal_state, run_cli
from gantool.app.job import train
from gantool.core.errors import GantoolError
from gantool.core.files import MetricsLog
from gantool.training.checkpointer import latest_checkpoint, list_checkpoints
from gantool.training.codec import load as load_checkpoint

# A run that checkpoints every step, so a kill often lands while a checkpoint is written.
KILLABLE = [
    "device=cpu",
    "trainer.steps=150",
    "trainer.batch_size=256",
    "trainer.log_every=5",
    "trainer.sample_every=150",
    "trainer.checkpoint_every=1",
    "trainer.keep_checkpoints=2",
    "trainer.num_eval_samples=1000",
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run that every killed-and-resumed run must reproduce exactly."""
    folder = tmp_path_factory.mktemp("reference")
    done = run_cli("train", *KILLABLE, f"hydra.run.dir={folder / 'run'}", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder / "run"


def assert_same_run(run: Path, reference: Path) -> None:
    a, b = (load_checkpoint(latest_checkpoint(d)) for d in (run, reference))
    assert a.step == b.step
    for part, tensors in a.gan.items():
        assert equal_state(tensors, b.gan[part]), part
    assert equal_state(a.rng, b.rng) and equal_state(a.stream, b.stream)
    assert (
        MetricsLog(run / "metrics.jsonl").rows() == MetricsLog(reference / "metrics.jsonl").rows()
    )


def kill_and_resume(folder: Path, sig: signal.Signals, delay: float) -> tuple[int, str]:
    """Start `gantool train`, send `sig` `delay` s after its first checkpoint, then resume."""
    run = folder / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gantool", "train", *KILLABLE, f"hydra.run.dir={run}"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list_checkpoints(run) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    # Whatever the moment, what is under a checkpoint's name loads.
    assert load_checkpoint(latest_checkpoint(run)).step >= 1
    resumed = run_cli("resume", str(run), cwd=folder)
    assert resumed.returncode == 0, resumed.stderr
    assert not list((run / "checkpoints").glob(".*.tmp"))
    return proc.returncode, stderr


# SIGINT's path is SIGTERM's (core.signals.StopRequest); the default run checks one of them.
@pytest.mark.parametrize(
    "sig",
    [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_saves_a_checkpoint_and_exits_with_its_code(tmp_path, reference, sig) -> None:
    code, stderr = kill_and_resume(tmp_path, sig, delay=0.05)
    assert code == 128 + sig, stderr
    assert f"{sig.name} at step" in stderr and "saved" in stderr
    assert "Traceback" not in stderr
    assert_same_run(tmp_path / "run", reference)


def test_sigkill_at_a_random_moment_loses_nothing_but_the_last_step(tmp_path, reference):
    kill_and_resume(tmp_path, signal.SIGKILL, delay=random.uniform(0, 0.5))
    assert_same_run(tmp_path / "run", reference)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(20))
def test_many_sigkills_at_random_moments(tmp_path, reference, trial: int) -> None:
    kill_and_resume(tmp_path, signal.SIGKILL, delay=random.Random(trial).uniform(0, 1.0))
    assert_same_run(tmp_path / "run", reference)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog) -> None:
    straight, damaged = tmp_path / "straight", tmp_path / "damaged"
    train(compose_config([*FAST, "trainer.steps=9"]), straight)
    train(compose_config(FAST), damaged)  # checkpoints at steps 3 and 6
    newest = latest_checkpoint(damaged)
    newest.write_bytes(newest.read_bytes()[:100])
    train(compose_config([*FAST, "trainer.steps=9"]), damaged)
    assert f"cannot load checkpoint {newest}" in caplog.text
    assert "falling back to the previous checkpoint" in caplog.text
    assert (newest.parent / (newest.name + ".corrupt")).exists()
    assert_same_run(damaged, straight)


def test_no_loadable_checkpoint_is_a_clear_error(tmp_path) -> None:
    train(compose_config(FAST), tmp_path)
    for path in list_checkpoints(tmp_path):
        path.write_bytes(b"garbage")
    with pytest.raises(GantoolError, match="no loadable checkpoint in"):
        train(compose_config([*FAST, "trainer.steps=9"]), tmp_path)


def test_resume_refuses_a_different_dataset(tmp_path) -> None:
    train(compose_config(FAST), tmp_path)
    with pytest.raises(GantoolError, match=r"dataset\.mean \(4\.0 -> 5\.0\)"):
        train(compose_config([*FAST, "dataset.mean=5.0", "trainer.steps=9"]), tmp_path)
    # lengths, intervals and learning rates may change
    more = [*FAST, "trainer.steps=10", "trainer.log_every=5", "optimizer.g.lr=1e-4"]
    assert train(compose_config(more), tmp_path)["step"] == 10


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch
) -> None:
    from gantool.nn.losses import BCE

    calls = {"n": 0}
    d_loss = BCE.d_loss

    def poisoned(self, real_out, fake_out):  # turns NaN from the 5th D update on
        calls["n"] += 1
        loss = d_loss(self, real_out, fake_out)
        return loss * float("nan") if calls["n"] >= 5 else loss

    monkeypatch.setattr(BCE, "d_loss", poisoned)
    with pytest.raises(GantoolError) as caught:
        train(compose_config(FAST), tmp_path)
    assert "a loss was not finite at step 5" in str(caught.value)
    assert "kept step_0000003.pt as the last good one" in str(caught.value)
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state.step == 3
    assert all(torch.isfinite(w).all() for w in state.gan["generator"].values())


def test_a_full_disk_is_a_clear_error(tmp_path, monkeypatch) -> None:
    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(GantoolError, match=r"cannot write .*checkpoints/step_0000003\.pt"):
        train(compose_config(FAST), tmp_path)
    assert not list((tmp_path / "checkpoints").iterdir())  # no temporary left behind


def test_two_runs_started_in_the_same_second_get_two_folders(tmp_path) -> None:
    # One-step runs: quick, and still real.
    args = [sys.executable, "-m", "gantool", "train", "device=cpu", "trainer.steps=1"]
    args.append("trainer.eval_at_end=false")
    procs = [subprocess.Popen(args, cwd=tmp_path, stderr=subprocess.PIPE) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    summaries = list((tmp_path / "outputs").rglob("summary.json"))
    assert len(summaries) == 2
    assert all(json.loads(p.read_text())["status"] == "completed" for p in summaries)


if os.name != "posix":  # pragma: no cover
    pytestmark = pytest.mark.skip("signals are POSIX")


def test_a_signal_stops_the_whole_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    command = ["train", "-m", "trainer.seed=0,1", *KILLABLE, f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gantool", *command],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list_checkpoints(sweep / "0") and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM at step" in stderr and "gantool resume" in stderr
    assert "error:" not in stderr  # a stop the user asked for is not an error
    assert json.loads((sweep / "0" / "summary.json").read_text())["status"] == "interrupted"
    assert not (sweep / "1").exists()  # the next job never started
