"""Checkpoint files: the codec's round trip, keep-K, latest, the migration of gantool 0.1's
files, and loading that never runs code."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from conftest import FAST, compose_config, equal_state
from gantool.app.job import train
from gantool.config.compose import to_dict
from gantool.core.errors import GantoolError
from gantool.runtime.rng import rng_state
from gantool.training import codec
from gantool.training.checkpointer import (
    Checkpointer,
    latest_checkpoint,
    list_checkpoints,
    resolve,
)
from gantool.training.codec import Checkpoint
from gantool.training.gan import GAN
from gantool.training.run_folder import RunFolder

CFG = compose_config(FAST)
GAN_STATE = GAN.build(CFG.model, CFG.optimizer, 0.0, (1,), torch.device("cpu")).state_dict()


def checkpoint(step: int, **more) -> Checkpoint:
    """A Checkpoint of the Gaussian default's networks, fresh, that the codec writes and reads."""
    fields = {
        "step": step,
        "gan": GAN_STATE,
        "stream": {},
        "epoch_size": None,
        "rng": [rng_state()],
        "fixed_noise": torch.zeros(1),
        "stats_sum": torch.zeros(6),
        "stats_count": 0,
        "config": to_dict(CFG),
        "started_in": None,
    }
    return Checkpoint(**{**fields, **more})


def save(run: Path, ckpt: Checkpoint, keep: int = 3) -> Path:
    return Checkpointer(RunFolder(run), keep).save(ckpt)


def test_round_trip_and_keep_the_newest(tmp_path: Path) -> None:
    for step in (10, 20, 30, 40):
        save(tmp_path, checkpoint(step, fixed_noise=torch.full((3,), float(step))), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000030.pt", "step_0000040.pt"]
    latest = latest_checkpoint(tmp_path)
    loaded = codec.load(latest)
    assert equal_state(loaded, checkpoint(40, fixed_noise=torch.full((3,), 40.0)))
    assert codec.load(tmp_path / "checkpoints" / "last.pt").step == 40
    assert resolve(tmp_path)[0] == latest
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert sorted(leftovers) == ["last.pt", "step_0000030.pt", "step_0000040.pt"]


def test_step_order_is_numeric_not_alphabetic(tmp_path: Path) -> None:
    for step in (9_999_999, 10_000_000):
        save(tmp_path, checkpoint(step), keep=5)
    assert codec.load(latest_checkpoint(tmp_path)).step == 10_000_000


class _Payload:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    state = {**codec.encode(checkpoint(1)), "payload": _Payload(str(target))}
    torch.save(state, path, pickle_protocol=2)
    for _ in range(2):  # a torch.save zip file, then a bare pickle
        with pytest.raises(GantoolError, match="is not a gantool checkpoint") as refused:
            codec.load(path)
        assert "was not loaded" in str(refused.value) and "weights_only" not in str(refused.value)
        assert not target.exists()
        path.write_bytes(pickle.dumps(_Payload(str(target))))


def test_corrupt_file_and_missing_paths_give_clear_errors(tmp_path: Path) -> None:
    save(tmp_path, checkpoint(1, fixed_noise=torch.ones(1000)), keep=1)
    path = latest_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(GantoolError, match=r"cannot load checkpoint .*step_0000001\.pt"):
        codec.load(path)
    with pytest.raises(GantoolError, match="no such checkpoint file or run folder"):
        resolve(tmp_path / "missing")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(GantoolError, match="no checkpoint in"):
        resolve(empty)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (torch.ones(3), "is not a gantool checkpoint: it holds a Tensor, not a dict"),
        ({"weights": torch.ones(3)}, "is not a gantool checkpoint: it lacks step, gan, data, rng"),
        ({**codec.encode(checkpoint(1)), "step": "1"}, "is not a gantool checkpoint: its step is"),
        ({**codec.encode(checkpoint(1)), "gan": {}}, "is damaged: its gan.generator is missing"),
        ({**codec.encode(checkpoint(1)), "rng": [{}]}, "is damaged: the RNG state of rank 0"),
        ({**codec.encode(checkpoint(1)), "format": 99}, "has checkpoint format 99"),
    ],
    ids=["bare tensor", "foreign dict", "wrong types", "no generator", "no rng", "newer"],
)
def test_a_file_without_gantools_structure_is_refused(tmp_path: Path, content, message):
    path = tmp_path / "model.pt"
    torch.save(content, path)
    with pytest.raises(GantoolError, match=f"{path} {message}"):
        codec.load(path)


def as_gantool_0_1(state: dict) -> dict:
    """A checkpoint dict in the layout gantool 0.1 wrote: no format, the stream's state as
    "data", one process's RNG as "rng"."""
    old = {k: v for k, v in state.items() if k not in ("format", "data", "rng")}
    return {**old, "data": state["data"]["stream"], "rng": state["rng"][0]}


@pytest.mark.parametrize("dataset", ["gaussian", "ring"])
def test_a_gantool_0_1_checkpoint_resumes_exactly(tmp_path: Path, dataset: str) -> None:
    """Migrated on load: the same Checkpoint, and a resumed run equal to one that never
    stopped. The ring's stream is read in epochs: its epoch size comes from the saved order."""
    args = [*FAST, f"dataset={dataset}", "trainer.eval_at_end=false", "trainer.num_samples=50"]
    if dataset == "ring":
        args += ["dataset.num_samples=400", "trainer.batch_size=20"]
    full, split = tmp_path / "full", tmp_path / "split"
    train(compose_config(args), full)
    train(compose_config([*args, "trainer.steps=3"]), split)
    path = latest_checkpoint(split)
    today = codec.load(path)
    torch.save(as_gantool_0_1(torch.load(path, weights_only=True)), path)
    migrated = codec.load(path)
    assert equal_state(migrated, today)
    assert migrated.epoch_size == (400 if dataset == "ring" else None)
    train(compose_config(args), split)
    a, b = (codec.load(latest_checkpoint(d)) for d in (full, split))
    assert equal_state(a.gan, b.gan) and a.step == b.step == 6


def test_a_checkpoint_from_before_a_key_existed_resumes(tmp_path: Path) -> None:
    """An older gantool's config lacks the keys added since; they held their defaults then."""
    now = compose_config(FAST)
    older = to_dict(compose_config(FAST))
    for key in ("spectral_norm", "pack", "first_block_plain"):
        del older["model"]["d"][key]
    del older["model"]["conditional"]
    codec.check_resumable(checkpoint(1, config=older), now, tmp_path / "step.pt")  # no change
    packed = compose_config([*FAST, "model.d.pack=2"])
    with pytest.raises(GantoolError, match=r"model\.d\.pack \(1 -> 2\)"):
        codec.check_resumable(checkpoint(1, config=older), packed, tmp_path / "step.pt")
