"""Checkpoint files: round trip, keep-K, latest, and loading that never runs code."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from conftest import FAST, compose_config
from gantool.checkpoint import (
    CHECKPOINT_KEYS,
    check_resumable,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from gantool.config import to_dict
from gantool.errors import GantoolError


def state(step: int, **more) -> dict:
    """The smallest dict with a gantool checkpoint's keys."""
    config = {"dataset": {"name": "gaussian"}}
    gan = {"generator": {}}
    plain = {"data": {}, "rng": {}, "fixed_noise": torch.zeros(1), "stats": {}}
    return {"step": step, "gan": gan, "config": config, **plain, **more}


def test_round_trip_and_keep_the_newest(tmp_path: Path) -> None:
    for step in (10, 20, 30, 40):
        saved = state(step, w=torch.full((3,), float(step)), rng=[1, 2, None])
        save_checkpoint(saved, tmp_path, step, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000030.pt", "step_0000040.pt"]
    latest = latest_checkpoint(tmp_path)
    loaded = load_checkpoint(latest)
    assert loaded["step"] == 40 and torch.equal(loaded["w"], torch.full((3,), 40.0))
    assert loaded["rng"] == [1, 2, None]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 40
    assert resolve_checkpoint(tmp_path) == latest
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert sorted(leftovers) == ["last.pt", "step_0000030.pt", "step_0000040.pt"]


def test_step_order_is_numeric_not_alphabetic(tmp_path: Path) -> None:
    for step in (9_999_999, 10_000_000):
        save_checkpoint(state(step), tmp_path, step, keep=5)
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 10_000_000


class _Payload:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(state(1, payload=_Payload(str(target))), path, pickle_protocol=2)
    for _ in range(2):  # a torch.save zip file, then a bare pickle
        with pytest.raises(GantoolError, match="is not a gantool checkpoint") as refused:
            load_checkpoint(path)
        assert "was not loaded" in str(refused.value) and "weights_only" not in str(refused.value)
        assert not target.exists()
        path.write_bytes(pickle.dumps(_Payload(str(target))))


def test_corrupt_file_and_missing_paths_give_clear_errors(tmp_path: Path) -> None:
    save_checkpoint(state(1, w=torch.ones(1000)), tmp_path, 1, keep=1)
    path = latest_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(GantoolError, match=r"cannot load checkpoint .*step_0000001\.pt"):
        load_checkpoint(path)
    with pytest.raises(GantoolError, match="no such checkpoint file or run folder"):
        resolve_checkpoint(tmp_path / "missing")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(GantoolError, match="no checkpoint in"):
        resolve_checkpoint(empty)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (torch.ones(3), "it holds a Tensor, not the dict of step, gan"),
        ({"weights": torch.ones(3)}, "it lacks step, gan, data, rng, fixed_noise, stats, config"),
        ({k: {} for k in CHECKPOINT_KEYS}, "its step, config or gan.generator is not"),
    ],
    ids=["bare tensor", "foreign dict", "wrong types"],
)
def test_a_file_without_gantools_keys_is_not_a_checkpoint(tmp_path: Path, content, message):
    path = tmp_path / "model.pt"
    torch.save(content, path)
    with pytest.raises(GantoolError, match=f"{path} is not a gantool checkpoint: {message}"):
        load_checkpoint(path)


def test_a_checkpoint_from_before_a_key_existed_resumes(tmp_path: Path) -> None:
    """An older gantool's config lacks the keys added since; they held their defaults then."""
    now = to_dict(compose_config(FAST))
    older = to_dict(compose_config(FAST))
    for key in ("spectral_norm", "pack", "first_block_plain"):
        del older["model"]["d"][key]
    del older["model"]["conditional"]
    check_resumable(older, now, tmp_path / "step.pt")  # nothing differs
    packed = to_dict(compose_config([*FAST, "model.d.pack=2"]))
    with pytest.raises(GantoolError, match=r"model\.d\.pack \(1 -> 2\)"):
        check_resumable(older, packed, tmp_path / "step.pt")
