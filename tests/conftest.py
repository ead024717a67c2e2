"""Shared fixtures: the real configs composed through Hydra and shrunk, and a tiny MNIST."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gantool.config.schema import Config
from gantool.datasets.mnist import write_idx
from gantool.datasets.registry import load_config

# Tests that need "no CUDA here" skip on a machine with a GPU.
CUDA = torch.cuda.is_available()

# Shrinks any config to a run of seconds on CPU.
FAST = [
    "device=cpu",
    "trainer.steps=6",
    "trainer.log_every=2",
    "trainer.sample_every=3",
    "trainer.checkpoint_every=3",
    "trainer.num_eval_samples=1000",
]


def mnist_overrides(root: Path, *extra: str) -> list[str]:
    """FAST on the MNIST files under `root` (see write_tiny_mnist)."""
    return [
        "dataset=mnist",
        f"dataset.root={root}",
        "dataset.split=test",
        "dataset.download=false",
        *FAST,
        "trainer.batch_size=16",
        *extra,
    ]


def compose_config(overrides: list[str]) -> Config:
    """The real configs, composed and checked exactly as `gantool train` does."""
    return load_config(overrides)


def write_tiny_mnist(
    root: Path, split: str = "test", num: int = 64, gz: bool = True, folder: str = "MNIST"
) -> Path:
    """A few 28x28 'digits' (a bright bar at a label-dependent place) in torchvision's layout:
    ROOT/FOLDER/raw (MNIST, or FashionMNIST, KMNIST: the other sets in MNIST's format)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, num).astype(np.uint8)
    images = rng.integers(0, 30, (num, 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels, strict=True):
        image[4 + 2 * label : 7 + 2 * label, 6:22] = 255
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    prefix = "t10k" if split == "test" else "train"
    write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz)
    write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return root


def write_image_folder(folder: Path, num: int = 4, size: int = 64) -> Path:
    """A few random RGB pictures as PNG files: a folder `dataset=images` reads."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num):
        pixels = np.random.default_rng(i).integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


STAND_IN = "gantool-test-stand-in"  # the stand-in network's name in torch-fidelity's registry


@pytest.fixture(scope="session")
def stand_in_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised network registered with torch-fidelity in Inception's place
    (image -> 8x8 average -> linear -> 16 features), and its weights file: the real FID and
    KID code of torch-fidelity runs on its features."""
    registry = pytest.importorskip(
        "torch_fidelity.registry", reason="torch-fidelity is not installed (gantool[fid])"
    )
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class StandIn(FeatureExtractorBase):
        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            self.linear = torch.nn.Linear(3 * 8 * 8, 16)
            state = torch.load(feature_extractor_weights_path, weights_only=True)
            self.load_state_dict(state)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            pooled = torch.nn.functional.adaptive_avg_pool2d(
                x.float() / 127.5 - 1, 8
            )  # (B, 3, 8, 8)
            return (torch.tanh(self.linear(pooled.flatten(1))),)

        @staticmethod
        def get_provided_features_list():
            return ("16",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "16"

        @staticmethod
        def can_be_compiled():
            return False

    if STAND_IN not in registry.FEATURE_EXTRACTORS_REGISTRY:
        registry.register_feature_extractor(STAND_IN, StandIn)
    g = torch.Generator().manual_seed(0)
    weights = tmp_path_factory.mktemp("stand_in") / "stand_in.pth"
    state = {"linear.weight": torch.randn(16, 192, generator=g) / 4, "linear.bias": torch.zeros(16)}
    torch.save(state, weights)
    return weights


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory: pytest.TempPathFactory):
    """The LeNet cache of the whole session, in a temporary folder: tests never write to ~."""
    before = os.environ.get("GANTOOL_CACHE_DIR")
    os.environ["GANTOOL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        del os.environ["GANTOOL_CACHE_DIR"]
    else:
        os.environ["GANTOOL_CACHE_DIR"] = before


@contextlib.contextmanager
def restored_logging():
    """The root logger's handlers and level as they were before the block: an in-process
    `gantool train` lets Hydra install handlers (train.log's among them, closed when its run
    ends), which must not catch a later test's log lines."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


@pytest.fixture(autouse=True)
def own_log_handlers():
    """Each test starts and ends with the root logger's handlers as they were."""
    with restored_logging():
        yield


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    return write_tiny_mnist(tmp_path / "data")


def run_cli(*args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run the real `gantool` command in a subprocess, as a user would."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "gantool", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_main(*args: str) -> int:
    """gantool's main() in this process, as a user runs the command; its exit code."""
    from gantool.app import cli

    try:
        cli.main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def one_error_line(capsys) -> str:
    """The one `error:` line a refused command printed, with no traceback anywhere."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) with a hash of its bytes: what a refused
    command must leave as it was. A FIFO counts by its name."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "not a file"
        for p in sorted(folder.rglob("*"))
        if not p.is_dir()
    }


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed 6-step run (checkpoints at 3 and 6) made by `gantool train`, with its
    .hydra folder, shared by the tests that read it or copy it to change it."""
    folder = tmp_path_factory.mktemp("finished")
    before = os.getcwd()
    os.chdir(folder)  # the run records where it started
    try:
        with restored_logging():
            assert run_main("train", *FAST, f"hydra.run.dir={folder / 'run'}") == 0
    finally:
        os.chdir(before)
    return folder / "run"


def only_run_dir(outputs: Path) -> Path:
    dirs = [p.parent for p in outputs.rglob(".hydra")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def equal_state(a, b) -> bool:
    """Exact equality of nested checkpoint state: tensors bit for bit, containers by item."""
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and equal_state(vars(a), vars(b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal_state(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(equal_state(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def assert_sweep_with_a_failed_job(sweep: Path, done: subprocess.CompletedProcess) -> None:
    """The sweep `-m dataset.std=1.25,-1,2` with FAST: jobs 0 and 2 trained, job 1 failed on
    its config, and the sweep as a whole failed with job 1's line."""
    import json

    for job, std in (("0", "1.25"), ("2", "2")):
        assert (sweep / job / "checkpoints" / "last.pt").is_file()
        assert f"dataset.std={std}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["step"] == 6
    failed = json.loads((sweep / "1" / "summary.json").read_text())
    assert failed == {"status": "failed", "error": "dataset.std=-1.0: must be > 0"}
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: job 1 (dataset.std=-1 " + " ".join(FAST) + ") failed: dataset.std=-1.0: must be > 0"
    )
    assert "Traceback" not in done.stderr
