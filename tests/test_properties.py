"""Property: any override value is either accepted and trains, or refused in one line."""

from __future__ import annotations

import dataclasses
import math
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gantool.app.job import train
from gantool.config.compose import to_dict
from gantool.core.errors import ConfigError, GantoolError
from gantool.datasets.registry import load_config

# A config that trains in well under a second; the random override comes after it and wins.
SMALL = [
    "device=cpu",
    "trainer.steps=2",
    "trainer.batch_size=32",
    "trainer.log_every=1",
    "trainer.sample_every=2",
    "trainer.checkpoint_every=1",
    "trainer.num_samples=16",
    "trainer.num_eval_samples=100",
]


def _leaf_keys(d: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in d.items():
        keys += _leaf_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return keys


KEYS = sorted(
    {*_leaf_keys(to_dict(load_config([]))), *_leaf_keys(to_dict(load_config(["dataset=mnist"])))}
)
GROUPS = ["dataset", "model", "optimizer", "trainer", "loss", "device", "experiment"]
TYPOS = ["trainer.stepz", "model.g.hiden", "optimizer.x.lr", "nonsense", "dataset.roots"]


def _format(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # nan, inf, -inf: Hydra's grammar reads these
    if isinstance(value, list):
        return "[" + ",".join(_format(v) for v in value) + "]"
    return str(value)


VALUES = st.one_of(
    st.integers(-3, 100),
    st.sampled_from([0, 1, 10**6, 10**12]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.booleans(),
    st.just("null"),
    st.text(alphabet=string.ascii_letters + string.digits + "_-.,[]{}$:'\"", max_size=8),
    st.lists(st.integers(-2, 64), max_size=3),
    st.sampled_from(["gaussian", "mnist", "elu", "moments", "sgd", "minimax", "cpu", "cuda"]),
)
OVERRIDES = st.builds(
    lambda key, value: f"{key}={_format(value)}",
    st.sampled_from(KEYS + GROUPS + TYPOS),
    VALUES,
)


def _check(override: str) -> None:
    key = override.split("=", 1)[0]
    try:
        cfg = load_config([*SMALL, override])
    except ConfigError as e:
        _assert_one_line(str(e), key.split(".")[0])
        return
    # Accepted: it must train. Keep the run short whatever the override asked for.
    t = cfg.trainer
    trainer = dataclasses.replace(
        t,
        steps=2,
        d_steps=min(t.d_steps, 2),
        g_steps=min(t.g_steps, 2),
        log_every=1,
        sample_every=2,
        checkpoint_every=1,
        batch_size=min(t.batch_size, 64),
        num_samples=min(t.num_samples, 64),
        num_eval_samples=min(t.num_eval_samples, 1000),
    )
    cfg = dataclasses.replace(cfg, trainer=trainer)
    with tempfile.TemporaryDirectory() as run_dir:
        try:
            summary = train(cfg, Path(run_dir))
        except GantoolError as e:  # e.g. MNIST files absent, or out of memory
            _assert_one_line(str(e), "")
            return
    assert summary["step"] == 2


def _assert_one_line(message: str, mentions: str) -> None:
    assert message and "\n" not in message, message
    assert mentions in message, (mentions, message)


@settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(OVERRIDES)
def test_any_override_is_accepted_and_trains_or_refused_in_one_line(override: str) -> None:
    _check(override)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OVERRIDES)
def test_many_random_overrides(override: str) -> None:
    _check(override)
