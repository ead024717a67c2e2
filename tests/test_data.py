"""The data streams: IDX reading, clear errors for missing files, data order and its state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from conftest import write_tiny_mnist
from gantool.config.datasets import GaussianConfig, MnistConfig
from gantool.core.errors import GantoolError
from gantool.datasets.gaussian import GaussianStream
from gantool.datasets.mnist import IMAGES_MAGIC, MnistStream, load_mnist, read_idx, write_idx

CPU = torch.device("cpu")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_are_read_as_they_are(tmp_path: Path, gz: bool) -> None:
    root = write_tiny_mnist(tmp_path, split="test", num=10, gz=gz)
    before = sorted(p.name for p in (root / "MNIST" / "raw").iterdir())
    images, labels = load_mnist(MnistConfig(root=str(root), split="test", download=False))
    assert images.shape == (10, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10,) and int(labels.max()) <= 9
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == before  # wrote nothing
    assert sorted(p.name for p in root.iterdir()) == ["MNIST"]


def test_missing_files_name_the_folder_and_the_files(tmp_path: Path) -> None:
    cfg = MnistConfig(root=str(tmp_path / "nowhere"), split="train", download=False)
    with pytest.raises(GantoolError) as caught:
        load_mnist(cfg)
    message = str(caught.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    assert not (tmp_path / "nowhere").exists()


def test_truncated_and_foreign_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "images"
    write_idx(path, torch.zeros(4, 28, 28, dtype=torch.uint8).numpy(), gz=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(GantoolError, match="truncated"):
        read_idx(path, IMAGES_MAGIC)
    path.write_bytes(b"not an idx file at all")
    with pytest.raises(GantoolError, match="not an MNIST IDX file"):
        read_idx(path, IMAGES_MAGIC)


def test_mnist_stream_scales_to_minus_one_one_and_covers_each_epoch(tiny_mnist: Path) -> None:
    cfg = MnistConfig(root=str(tiny_mnist), split="test", download=False)
    stream = MnistStream(cfg, batch_size=16, seed=0, device=CPU)
    assert stream.batches_per_epoch == 4
    epoch = torch.cat([stream.next_batch() for _ in range(4)])
    assert epoch.shape == (64, 784)
    assert epoch.min() >= -1 and epoch.max() <= 1 and epoch.max() == 1
    # one epoch visits every image exactly once
    assert torch.equal(torch.unique(epoch, dim=0), torch.unique(stream.rows, dim=0))


@pytest.mark.parametrize("kind", ["gaussian", "mnist"])
def test_stream_state_restores_the_data_order(tiny_mnist: Path, kind: str) -> None:
    def make():
        if kind == "gaussian":
            return GaussianStream(GaussianConfig(), batch_size=8, seed=3, device=CPU)
        return MnistStream(MnistConfig(root=str(tiny_mnist), split="test"), 24, 3, CPU)

    stream = make()
    for _ in range(3):
        stream.next_batch()
    state = stream.state_dict()
    expected = [stream.next_batch() for _ in range(5)]  # crosses an epoch boundary for MNIST
    restored = make()
    restored.load_state_dict(state)
    assert all(torch.equal(a, restored.next_batch()) for a in expected)


def test_gaussian_stream_has_the_configured_moments() -> None:
    stream = GaussianStream(
        GaussianConfig(mean=4.0, std=1.25), batch_size=100_000, seed=0, device=CPU
    )
    x = stream.next_batch()
    assert x.shape == (100_000, 1)
    assert x.mean().item() == pytest.approx(4.0, abs=0.02)
    assert x.std().item() == pytest.approx(1.25, abs=0.02)


@pytest.mark.skipif("GANTOOL_MNIST_ROOT" not in os.environ, reason="GANTOOL_MNIST_ROOT not set")
def test_real_mnist_test_split() -> None:
    cfg = MnistConfig(root=os.environ["GANTOOL_MNIST_ROOT"], split="test", download=False)
    images, labels = load_mnist(cfg)
    assert images.shape == (10_000, 28, 28)
    assert torch.bincount(labels.long()).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
