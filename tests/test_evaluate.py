"""The LeNet feature classifier (training, cache) and evaluate() on both datasets."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import FAST, compose_config, equal_state, write_tiny_mnist
from gantool.config.datasets import GaussianConfig, MnistConfig
from gantool.config.metrics import HIGHER_IS_BETTER
from gantool.datasets import mnist
from gantool.datasets.mnist import load_mnist, to_model_range
from gantool.datasets.registry import evaluate
from gantool.nn import lenet
from gantool.nn.mlp import Generator

CPU = torch.device("cpu")
TINY = lenet.Recipe(steps=40, batch_size=16)  # a training budget of a fraction of a second
BARE = lenet.Recipe(steps=3, batch_size=16)  # for the cache's mechanics: accuracy is no matter


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test writes to the user's cache."""
    monkeypatch.setenv("GANTOOL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def count_trainings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = lenet.train_lenet

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(lenet, "train_lenet", counted)
    return calls


def mnist_config(root: Path):
    return compose_config(
        ["dataset=mnist", f"dataset.root={root}", "dataset.split=test", "dataset.download=false"]
    )


class Constant(nn.Module):
    """A generator collapsed onto one image, whatever its noise."""

    def __init__(self, image: torch.Tensor):
        super().__init__()
        self.register_buffer("image", image)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.image.expand(len(z), -1)


# --- LeNet --------------------------------------------------------------------------------------


def test_lenet_shapes() -> None:
    net = lenet.LeNet(TINY)
    x = torch.zeros(5, 784)
    assert net.features(x).shape == (5, TINY.num_features)
    assert net(x).shape == (5, 10)


def test_training_is_seeded_and_leaves_the_global_rng_alone(tiny_mnist: Path) -> None:
    _, train, heldout = mnist.training_data(tiny_mnist, TINY)
    before = torch.get_rng_state()
    first, accuracy = lenet.train_lenet(train, heldout, CPU, TINY)
    assert torch.equal(torch.get_rng_state(), before)
    second, again = lenet.train_lenet(train, heldout, CPU, TINY)
    assert equal_state(first.state_dict(), second.state_dict()) and accuracy == again
    # The tiny digits are bars at a height set by the label: even 40 steps learn some.
    assert accuracy > 0.3


def test_small_datasets_get_at_most_max_epochs(tiny_mnist: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="gantool")
    _, train, heldout = mnist.training_data(tiny_mnist)
    lenet.train_lenet(train, heldout, CPU)  # the default recipe: 1500 steps of up to 128
    # 51 images make one batch of 51: 30 epochs are 30 steps.
    assert "on 51 MNIST images for 30 steps" in caplog.text


def test_one_split_is_cut_80_20_and_train_is_preferred(tmp_path: Path) -> None:
    root = write_tiny_mnist(tmp_path / "data", "test", num=50)
    split, train, heldout = mnist.training_data(root, TINY)
    assert split == "test" and (len(train[0]), len(heldout[0])) == (40, 10)
    write_tiny_mnist(root, "train", num=70)
    split, train, heldout = mnist.training_data(root, TINY)
    assert split == "train" and (len(train[0]), len(heldout[0])) == (70, 50)


def test_the_cached_classifier_is_reused(tiny_mnist: Path, cache_in_tmp: Path, monkeypatch) -> None:
    calls = count_trainings(monkeypatch)
    first = mnist.load_classifier(tiny_mnist, CPU, BARE)
    assert calls == [1] and first.path.parent == cache_in_tmp and first.path.is_file()
    assert first.path.name.startswith("lenet-") and first.train_split == "test"
    second = mnist.load_classifier(tiny_mnist, CPU, BARE)
    assert calls == [1]  # no retraining
    assert second.accuracy == first.accuracy
    assert equal_state(first.net.state_dict(), second.net.state_dict())
    assert [p.name for p in cache_in_tmp.iterdir()] == [first.path.name]  # no temporaries


def test_the_cache_key_follows_the_data_and_the_recipe(tmp_path: Path) -> None:
    root = write_tiny_mnist(tmp_path / "a")
    _, train, heldout = mnist.training_data(root, BARE)
    key = lenet.cache_key(train, heldout, BARE)
    assert lenet.cache_key(train, heldout, BARE) == key
    images = train[0].clone()
    images[0, 0, 0] += 1  # one pixel
    assert lenet.cache_key((images, train[1]), heldout, BARE) != key
    labels = train[1].clone()
    labels[0] = (labels[0] + 1) % 10
    assert lenet.cache_key((train[0], labels), heldout, BARE) != key
    assert lenet.cache_key(train, heldout, dataclasses.replace(BARE, steps=4)) != key
    other = write_tiny_mnist(tmp_path / "b", num=65)
    assert (
        mnist.load_classifier(root, CPU, BARE).path != mnist.load_classifier(other, CPU, BARE).path
    )


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", "wrong key"])
def test_a_corrupt_cache_is_retrained(tiny_mnist: Path, monkeypatch, content, caplog) -> None:
    path = mnist.load_classifier(tiny_mnist, CPU, BARE).path
    if content == "wrong key":  # a readable file that belongs to other data
        state = torch.load(path, weights_only=True)
        torch.save({**state, "key": "0" * 20}, path)
    else:
        path.write_bytes(content)
    calls = count_trainings(monkeypatch)
    classifier = mnist.load_classifier(tiny_mnist, CPU, BARE)
    assert calls == [1] and "Ignoring the unusable LeNet cache" in caplog.text
    assert torch.load(path, weights_only=True)["accuracy"] == classifier.accuracy


def test_an_unwritable_cache_only_warns(tiny_mnist: Path, tmp_path: Path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("GANTOOL_CACHE_DIR", str(blocker / "cache"))  # under a file: cannot exist
    classifier = mnist.load_classifier(tiny_mnist, CPU, BARE)
    assert "Cannot cache the LeNet" in caplog.text
    assert classifier.embed(torch.zeros(2, 784))[0].shape == (2, BARE.num_features)


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANTOOL_CACHE_DIR", "/x/gantool-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert lenet.cache_dir() == Path("/x/gantool-cache")
    monkeypatch.delenv("GANTOOL_CACHE_DIR")
    assert lenet.cache_dir() == Path("/xdg/gantool")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "/home/someone")
    assert lenet.cache_dir() == Path("/home/someone/.cache/gantool")


# --- evaluate -----------------------------------------------------------------------------------

GAUSSIAN_KEYS = {"eval/mean", "eval/std", "eval/skewness", "eval/excess_kurtosis", "eval/ks"}


def test_evaluate_gaussian() -> None:
    cfg = compose_config(FAST)
    G = Generator(cfg.model, 1)
    before = torch.get_rng_state()
    result = evaluate(cfg, G, CPU, 2000, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert set(result) == {*GAUSSIAN_KEYS, "eval/w1", "eval/num_samples"}
    assert result["eval/num_samples"] == 2000 and result == evaluate(cfg, G, CPU, 2000, seed=3)
    assert set(GaussianConfig.eval_keys) <= set(result)

    class Exact(nn.Module):  # N(mean, std²) from normal noise, scaled and shifted: perfect
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return z[:, :1] * cfg.dataset.std + cfg.dataset.mean

    assert cfg.model.noise == "normal"

    perfect = evaluate(cfg, Exact(), CPU, 20_000)
    assert perfect["eval/w1"] < 0.05 < result["eval/w1"]
    assert perfect["eval/mean"] == pytest.approx(cfg.dataset.mean, abs=0.05)


def test_evaluate_mnist_calibration_and_mode_collapse(tiny_mnist: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="gantool")
    cfg = mnist_config(tiny_mnist)
    G = Generator(cfg.model, 784)
    before = torch.get_rng_state()
    result = evaluate(cfg, G, CPU, 1000, recipe=TINY)
    assert torch.equal(torch.get_rng_state(), before)
    assert result["eval/num_samples"] == 32  # half of the 64 real images; the log says so
    assert "Scoring 32 generated samples, not 1000" in caplog.text
    calibration = {f"eval/{m}_{k}" for m in ("precision", "recall") for k in ("real", "noise")}
    assert set(result) >= {*MnistConfig.eval_keys, *calibration, "eval/classifier_accuracy"}
    assert calibration <= HIGHER_IS_BETTER
    assert len(result["eval/class_histogram"]) == 10
    assert sum(result["eval/class_histogram"]) == pytest.approx(1.0)
    assert 0 < result["eval/classifier_accuracy"] <= 1
    # The LeNet's weights, named: two numbers are comparable when this is the same.
    classifier = mnist.load_classifier(tiny_mnist, CPU, TINY)
    assert result["eval/feature_net"] == lenet.weights_digest(classifier.net)
    # Noise is far from real digits; other real digits are close and inside the manifold.
    assert result["eval/fld_noise"] > 5 * result["eval/fld_real_floor"]
    assert result["eval/precision_real"] > 0.5 and result["eval/recall_real"] > 0.5
    assert result["eval/precision_noise"] == 0.0
    assert result == evaluate(cfg, G, CPU, 1000, recipe=TINY)  # seeded

    image = torch.zeros(784)  # collapsed onto one image: one class, KL = ln 10
    collapsed = evaluate(cfg, Constant(image), CPU, 20, recipe=TINY)
    assert collapsed["eval/num_classes_covered"] == 1
    assert collapsed["eval/class_kl"] == pytest.approx(math.log(10))
    assert collapsed["eval/num_samples"] == 20


@pytest.mark.slow
@pytest.mark.skipif("GANTOOL_MNIST_ROOT" not in os.environ, reason="GANTOOL_MNIST_ROOT not set")
def test_real_mnist_lenet_reaches_97_percent_and_calibrates() -> None:
    """The default recipe on the real test split: about a minute of training on 2 cores."""
    root = os.environ["GANTOOL_MNIST_ROOT"]
    classifier = mnist.load_classifier(root, CPU)
    assert classifier.accuracy >= lenet.MIN_ACCURACY
    assert (classifier.num_train, classifier.num_heldout) == (8000, 2000)

    cfg = mnist_config(Path(root))
    digit = to_model_range(load_mnist(cfg.dataset)[0][:1])[0]
    collapsed = evaluate(cfg, Constant(digit), CPU, 2000)
    assert collapsed["eval/num_classes_covered"] == 1
    noise = evaluate(cfg, Generator(cfg.model, 784), CPU, 2000)  # an untrained G
    assert noise["eval/classifier_accuracy"] == classifier.accuracy
    assert noise["eval/precision_real"] > 0.6 and noise["eval/recall_real"] > 0.6
    assert noise["eval/fld_noise"] > 20 * noise["eval/fld_real_floor"]
    assert noise["eval/fld"] > 20 * noise["eval/fld_real_floor"]
