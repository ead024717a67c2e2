"""Image sets in MNIST's format (MNIST, Fashion-MNIST, KMNIST): options, folders, messages, the
LeNet per set, and one Fashion-MNIST run end to end on small IDX files the tests write."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose_config, equal_state, mnist_overrides, run_cli, write_tiny_mnist
from gantool.app.cli import main
from gantool.app.download import fetch_missing
from gantool.app.job import train
from gantool.config.compose import to_dict
from gantool.config.datasets import SCHEMAS as DATASET_SCHEMAS
from gantool.config.datasets import MnistConfig
from gantool.core.errors import GantoolError
from gantool.core.files import MetricsLog
from gantool.datasets import mnist
from gantool.datasets import mnist as idx
from gantool.datasets.registry import FAMILIES, evaluate, family
from gantool.nn import lenet
from gantool.nn.mlp import Generator
from gantool.training.checkpointer import latest_checkpoint
from gantool.training.codec import load as load_checkpoint

CPU = torch.device("cpu")
BARE = lenet.Recipe(steps=3, batch_size=16)  # for the cache's mechanics: accuracy is no matter
# option -> (its folder under dataset.root, its label in messages)
SETS = {
    "mnist": ("MNIST", "MNIST"),
    "fashion_mnist": ("FashionMNIST", "Fashion-MNIST"),
    "kmnist": ("KMNIST", "KMNIST"),
}
OTHERS = ["fashion_mnist", "kmnist"]  # the options beside MNIST


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test writes to the user's LeNet cache."""
    monkeypatch.setenv("GANTOOL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_tiny_clothes(root: Path, split: str = "test", num: int = 64) -> Path:
    """A few 28x28 'garments' (a bright vertical block at a label-dependent place) in
    torchvision's Fashion-MNIST layout, ROOT/FashionMNIST/raw: unlike write_tiny_mnist's bars."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, num).astype(np.uint8)
    images = rng.integers(0, 30, (num, 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels, strict=True):
        image[5:23, 3 + 2 * label : 7 + 2 * label] = 200
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    prefix = "t10k" if split == "test" else "train"
    idx.write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz=True)
    idx.write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def overrides(name: str, root: Path, *extra: str) -> list[str]:
    """FAST on the image set `name` under root (mnist_overrides, another dataset option)."""
    return [f"dataset={name}", *mnist_overrides(root, *extra)[1:]]


# --- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OTHERS)
def test_each_option_composes_with_mnists_settings(name: str) -> None:
    cfg, mnist = compose_config([f"dataset={name}"]), compose_config(["dataset=mnist"])
    assert type(cfg.dataset) is DATASET_SCHEMAS[name] and isinstance(cfg.dataset, MnistConfig)
    assert family(cfg.dataset) is FAMILIES[name] and family(cfg.dataset).name == name
    assert (cfg.dataset.name, cfg.dataset.root, cfg.dataset.split, cfg.dataset.download) == (
        name,
        "data",
        "train",
        True,
    )
    # model, optimizer, trainer and loss follow the dataset: MNIST's, through a defaults list
    ours, theirs = to_dict(cfg), to_dict(mnist)
    for group in ("model", "optimizer", "trainer", "loss"):
        assert ours[group] == theirs[group], group
    assert family(cfg.dataset).data_dim(cfg.dataset) == 784
    # each group's option can still be chosen alone, and a misspelt split is one line
    assert compose_config([f"dataset={name}", "model=gaussian"]).model.latent_dim == 16
    with pytest.raises(GantoolError, match=r"dataset\.split='val' is not a choice"):
        compose_config([f"dataset={name}", "dataset.split=val"])


# --- files --------------------------------------------------------------------------------------


def test_each_set_is_read_from_its_own_folder(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for (name, (folder, _)), num in zip(SETS.items(), (40, 50, 60), strict=True):
        write_tiny_mnist(root, "test", num=num, folder=folder)
        assert idx.raw_folder(root, name) == root / folder / "raw"
    for name, num in zip(SETS, (40, 50, 60), strict=True):
        cfg = DATASET_SCHEMAS[name](root=str(root), split="test", download=False)
        assert cfg.name == name
        images, labels = idx.load_mnist(cfg)
        assert images.shape == (num, 28, 28) and labels.shape == (num,)
        assert idx.split_present(root, "test", name) and not idx.split_present(root, "train", name)
        family(cfg).check_available(cfg)  # no error: the files are there
        stream = family(cfg).stream(cfg, 8, 0, CPU)
        assert stream.next_batch().shape == (8, 784)
    assert idx.raw_folder(root) == root / "MNIST" / "raw"  # MNIST when no name is given


@pytest.mark.parametrize("name", SETS)
def test_missing_files_name_the_sets_folder(tmp_path: Path, name: str) -> None:
    folder, label = SETS[name]
    root = tmp_path / "data"
    for other, (other_folder, _) in SETS.items():  # the other sets are there: no help
        if other != name:
            write_tiny_mnist(root, "train", num=20, folder=other_folder)
    cfg = DATASET_SCHEMAS[name](root=str(root), split="train", download=False)
    with pytest.raises(GantoolError) as refused:
        family(cfg).check_available(cfg)
    message = str(refused.value)
    assert message.startswith(f"{label} train split not found in {root / folder / 'raw'} ")
    assert "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]" in message
    assert message.endswith(f"point dataset.root at the folder that holds {folder}/raw.")
    with pytest.raises(GantoolError, match=r"dataset\.download=false"):
        idx.load_mnist(cfg)

    # `gantool eval` looks in the same folder, and says which --data-root to give
    with pytest.raises(GantoolError) as refused:
        family(cfg).for_evaluation(cfg, tmp_path, None)
    message = str(refused.value)
    assert message.startswith(f"{label} train split not found in {root / folder / 'raw'} ")
    assert message.endswith(f"pass --data-root ROOT, the folder that holds {folder}/raw")


def test_missing_fashion_mnist_is_one_line_from_the_command(tmp_path: Path) -> None:
    done = run_cli(
        "train",
        "dataset=fashion_mnist",
        "dataset.root=nowhere",
        "dataset.download=false",
        cwd=tmp_path,
    )
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(
        f"error: Fashion-MNIST train split not found in {tmp_path / 'nowhere/FashionMNIST/raw'} "
    )
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("name", OTHERS)
def test_download_uses_torchvisions_class_for_the_set(tmp_path: Path, monkeypatch, name) -> None:
    """Missing files go to torchvision's class of the folder's name, which downloads into
    ROOT/<folder>/raw (here a stand-in that writes tiny files: no test downloads)."""
    import torchvision.datasets

    folder, _ = SETS[name]
    calls = []

    def download(root: str, train: bool, download: bool) -> None:
        calls.append((root, train, download))
        write_tiny_mnist(Path(root), "train" if train else "test", num=24, folder=folder)

    monkeypatch.setattr(torchvision.datasets, folder, download)
    root = tmp_path / "data"
    ds = DATASET_SCHEMAS[name](root=str(root), split="test")
    fetch_missing(ds)
    images, _ = idx.load_mnist(ds)
    assert calls == [(str(root), False, True)] and len(images) == 24
    assert (root / folder / "raw" / "t10k-images-idx3-ubyte.gz").is_file()


# --- the LeNet and the evaluation ---------------------------------------------------------------


def test_each_set_gets_its_own_lenet(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="gantool")
    root = write_tiny_clothes(write_tiny_mnist(tmp_path / "data", num=64), num=80)
    digits = mnist.load_classifier(root, CPU, BARE)  # MNIST by default
    clothes = mnist.load_classifier(root, CPU, BARE, "fashion_mnist")
    assert digits.path != clothes.path  # the cache keys differ: the data do
    assert (digits.num_train, clothes.num_train) == (51, 64)  # 80% of each set's own images
    assert "on 64 Fashion-MNIST test images" in caplog.text
    # Three steps learn little: the warning names the set and its own bar (85%, not 97%).
    assert clothes.accuracy < idx.FASHION_MNIST.min_accuracy
    assert f"on Fashion-MNIST test images is below {idx.FASHION_MNIST.min_accuracy:.0%}" in (
        caplog.text
    )
    _, train_split, heldout = mnist.training_data(root, BARE, "fashion_mnist")
    assert lenet.cache_key(train_split, heldout, BARE) in clothes.path.name
    again = mnist.load_classifier(root, CPU, BARE, "fashion_mnist")
    assert again.path == clothes.path and equal_state(
        again.net.state_dict(), clothes.net.state_dict()
    )


@pytest.mark.parametrize("name", OTHERS)
def test_the_evaluation_names_the_sets_classes(tmp_path: Path, name: str) -> None:
    root = write_tiny_mnist(tmp_path / "data", folder=SETS[name][0])
    cfg = compose_config(overrides(name, root))
    result = evaluate(cfg, Generator(cfg.model, 784), CPU, 1000, recipe=BARE)
    assert result["eval/num_samples"] == 32 and len(result["eval/class_histogram"]) == 10
    assert result["eval/class_names"] == list(family(cfg.dataset).class_names)
    assert set(result) >= set(cfg.dataset.eval_keys)
    assert result["eval/fld_noise"] > result["eval/fld_real_floor"]
    names = {"fashion_mnist": ("T-shirt/top", "Ankle boot"), "kmnist": ("o", "wo")}[name]
    assert (result["eval/class_names"][0], result["eval/class_names"][-1]) == names


# --- a run end to end ---------------------------------------------------------------------------


def test_fashion_mnist_trains_samples_evaluates_and_resumes_exactly(tmp_path: Path, capsys):
    root = write_tiny_clothes(tmp_path / "data")
    run = tmp_path / "run"
    summary = train(compose_config(overrides("fashion_mnist", root)), run)
    assert summary["step"] == 6 and summary["objective"]["name"] == "eval/fld"
    assert summary["eval"]["eval/num_samples"] == 32  # half of the 64 images
    assert Image.open(summary["samples"]).size == (484, 520)  # 8x8 grid, 2x, titled
    assert not (root / "FashionMNIST" / "processed").exists()  # nothing written into the root

    main(["sample", str(run), "--out", str(tmp_path / "x.png"), "--device", "cpu"])
    assert Image.open(tmp_path / "x.png").size == (484, 520)
    main(["eval", str(run), "--device", "cpu"])
    written = json.loads((run / "eval.json").read_text())
    assert written["eval"] == summary["eval"]  # the same generator, noise and LeNet
    assert written["eval"]["eval/class_names"][0] == "T-shirt/top"
    capsys.readouterr()

    # Resume: 3 steps, then on to 7, is 7 steps at once, bit for bit.
    base = overrides("fashion_mnist", root, "trainer.eval_at_end=false")
    full, split = tmp_path / "full", tmp_path / "split"
    train(compose_config([*base, "trainer.steps=7"]), full)
    train(compose_config([*base, "trainer.steps=3"]), split)
    assert train(compose_config([*base, "trainer.steps=7"]), split)["step"] == 7
    a, b = (load_checkpoint(latest_checkpoint(d)) for d in (full, split))
    for part in ("gan", "rng", "stream", "fixed_noise"):
        assert equal_state(getattr(a, part), getattr(b, part)), part
    assert a.config["dataset"]["name"] == "fashion_mnist"
    assert MetricsLog(full / "metrics.jsonl").rows() == MetricsLog(split / "metrics.jsonl").rows()


@pytest.mark.slow  # the mixture's and test_cli's sweeps run in the default suite
def test_fashion_mnist_sweeps_from_the_command(tmp_path: Path) -> None:
    root = write_tiny_clothes(tmp_path / "data")
    done = run_cli(
        "train",
        "-m",
        *overrides("fashion_mnist", root, "trainer.eval_at_end=false", "device.num_threads=1"),
        "optimizer.g.lr=2e-4,1e-3",
        cwd=tmp_path,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    for job in ("0", "1"):
        found = next((tmp_path / "outputs" / "multirun").rglob(f"{job}/summary.json"))
        summary = json.loads(found.read_text())
        assert summary["status"] == "completed" and summary["step"] == 6
        overridden = (found.parent / ".hydra" / "overrides.yaml").read_text()
        assert "dataset=fashion_mnist" in overridden
