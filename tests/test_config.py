"""Every config group and preset composes and builds; bad values fail with one clear line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import FAST, compose_config, write_image_folder
from gantool.config.compose import config_dir, to_dict
from gantool.config.datasets import GaussianConfig, MnistConfig
from gantool.core.errors import ConfigError
from gantool.datasets.registry import family, to_config
from gantool.nn.mlp import sample_latent, with_classes
from gantool.training.gan import GAN

CONFIGS = config_dir()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def dataset_for(group: str, name: str) -> list[str]:
    """What an option needs beside it: a dataset's own trainer may count epochs, which only
    that (finite) dataset has; the user's vectors need a file (written by the test)."""
    needs = [f"dataset={name}"] if group == "trainer" else []
    if name == "vectors" and group in ("dataset", "trainer"):
        needs.append("dataset.path=VECTORS_FILE")
    if name == "images" and group in ("dataset", "trainer", "model"):
        needs += ["dataset=images", "dataset.path=IMAGES_FOLDER"]
    if (group, name) in (("model", "dcgan"), ("experiment", "dcgan")):  # DCGAN takes images
        needs += ["dataset=images", "dataset.path=IMAGES_FOLDER"]
    return needs


@pytest.mark.parametrize(
    "overrides",
    [
        [f"{group}={name}", *dataset_for(group, name)]
        for group in ("dataset", "model", "optimizer", "trainer", "loss")
        for name in options(group)
    ]
    + [[f"experiment={name}", *dataset_for("experiment", name)] for name in options("experiment")]
    + [
        [f"variant={name}", *extra]
        for name in options("variant")
        for extra in ([], ["dataset=mnist"])
    ]
    + [["device=cpu"], ["device=auto"], ["loss.g_loss=minimax"]],
    ids=lambda o: o[0],
)
def test_every_option_composes_and_builds(overrides: list[str], tmp_path) -> None:
    vectors = tmp_path / "vectors.csv"
    np.savetxt(vectors, np.random.default_rng(0).normal(size=(8, 3)), delimiter=",")
    folder = str(write_image_folder(tmp_path / "images", size=32))
    paths = {"VECTORS_FILE": str(vectors), "IMAGES_FOLDER": folder}
    for name, path in paths.items():
        overrides = [o.replace(name, path) for o in overrides]
    cfg = compose_config(overrides)
    gan = GAN.build(
        cfg.model,
        cfg.optimizer,
        cfg.trainer.ema_decay,
        family(cfg.dataset).sample_shape(cfg.dataset),
        torch.device("cpu"),
    )
    z = sample_latent(8, cfg.model, torch.device("cpu"))  # a conditional G's: with classes
    fake = gan.generator(z)
    assert fake.shape == (8, family(cfg.dataset).data_dim(cfg.dataset))
    judged = with_classes(fake, z[:, -1]) if cfg.model.conditional else fake
    logits = gan.discriminator(judged)
    one_per_batch = cfg.model.d.features == "moments"
    assert logits.shape == ((1, 1) if one_per_batch else (8 // cfg.model.d.pack, 1))


def test_model_optimizer_and_trainer_follow_the_dataset() -> None:
    gaussian, mnist = compose_config([]), compose_config(["dataset=mnist"])
    assert isinstance(gaussian.dataset, GaussianConfig)
    assert isinstance(mnist.dataset, MnistConfig)
    assert gaussian.model.noise == "normal" and gaussian.trainer.steps == 2000
    assert mnist.model.g.out_activation == "tanh" and mnist.trainer.epochs == 20
    assert gaussian.loss.r1_gamma == 10.0 and mnist.loss.r1_gamma == 0.0
    assert (mnist.dataset.root, mnist.dataset.split, mnist.dataset.download) == (
        "data",
        "train",
        True,
    )


def test_presets_pin_the_reference_setups() -> None:
    seed = compose_config(["experiment=seed_gaussian"])
    assert seed.model.g.hidden == [5, 5] and seed.model.g.activation == "elu"
    assert seed.model.d.features == "moments" and seed.model.d.activation == "sigmoid"
    assert seed.model.d.hidden == [10, 10] and seed.model.noise == "uniform"
    assert (seed.optimizer.g.name, seed.optimizer.g.lr, seed.optimizer.g.momentum) == (
        "sgd",
        1e-3,
        0.9,
    )
    assert (seed.trainer.batch_size, seed.trainer.d_steps, seed.trainer.g_steps) == (500, 20, 20)

    classic = compose_config(["experiment=seed_mnist"])
    assert classic.model.latent_dim == 64 and classic.model.g.hidden == [256, 256]
    assert (classic.model.g.activation, classic.model.g.out_activation) == ("relu", "tanh")
    assert classic.model.d.activation == "leaky_relu" and classic.model.d.negative_slope == 0.2
    assert classic.optimizer.d.lr == 2e-4 and classic.trainer.batch_size == 100

    for preset in (seed, classic):
        assert preset.loss.r1_gamma == 0.0 and preset.loss.g_loss == "non_saturating"

    keras = compose_config(["experiment=keras_mnist"])
    assert keras.model.latent_dim == 100 and keras.model.g.hidden == [256, 512, 1024]
    assert keras.model.g.batch_norm and keras.model.g.batch_norm_momentum == pytest.approx(0.2)
    assert keras.model.d.hidden == [512, 256] and not keras.model.d.batch_norm
    assert keras.optimizer.g.betas == [0.5, 0.999] and keras.optimizer.g.lr == 2e-4


def test_keras_preset_builds_batch_norm_after_the_activation() -> None:
    cfg = compose_config(["experiment=keras_mnist"])
    layers = GAN.build(
        cfg.model, cfg.optimizer, cfg.trainer.ema_decay, (784,), torch.device("cpu")
    ).generator.net
    kinds = [type(m).__name__ for m in layers]
    assert kinds[:3] == ["Linear", "LeakyReLU", "BatchNorm1d"] and kinds[-1] == "Tanh"
    assert layers[2].momentum == pytest.approx(0.2)


def test_checkpoint_dict_converts_back_to_the_same_config() -> None:
    for overrides in ([], ["experiment=keras_mnist"]):
        cfg = compose_config(overrides)
        assert to_config(to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.g.lr=0", "optimizer.g.lr=0.0: must be > 0"),
        ("optimizer.d.lr=-1e-3", "optimizer.d.lr=-0.001: must be > 0"),
        ("trainer.batch_size=0", "trainer.batch_size=0: must be >= 1"),
        ("dataset.std=0", "dataset.std=0.0: must be > 0"),
        ("model.latent_dim=0", "model.latent_dim=0: must be >= 1"),
        ("model.g.activation=swish", "model.g.activation='swish' is not a choice: expected"),
        ("model.d.features=pixels", "model.d.features='pixels' is not a choice"),
        ("model.noise=cauchy", "model.noise='cauchy' is not a choice"),
        ("optimizer.g.name=rmsprop", "optimizer.g.name='rmsprop' is not a choice"),
        ("loss.g_loss=hinge", "loss.g_loss='hinge' is not a choice"),
        ("model.d.dropout=1.0", "model.d.dropout=1.0: must be in [0, 1)"),
        ("optimizer.g.betas=[0.5]", "optimizer.g.betas=[0.5]: expected two values"),
        ("trainer.steps=null", "trainer.steps and trainer.epochs are both unset"),
        ("trainer.steps=null trainer.epochs=3", "trainer.epochs: the gaussian dataset is endless"),
        ("trainer.d_steps=0", "trainer.d_steps=0: must be >= 1"),
        ("trainer.seed=4294967296", "trainer.seed=4294967296: must be in [0, 2**32)"),
        ("trainer.ema_decay=1.0", "trainer.ema_decay=1.0: must be in [0, 1)"),
        ("trainer.seed=-1", "trainer.seed=-1: must be in [0, 2**32)"),
    ],
)
def test_out_of_range_values_fail_with_one_line_naming_the_key(override, message) -> None:
    with pytest.raises(ConfigError) as caught:
        compose_config(override.split())
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_mnist_split_must_be_train_or_test() -> None:
    with pytest.raises(ConfigError, match=r"dataset\.split='val' is not a choice"):
        compose_config(["dataset=mnist", "dataset.split=val"])


def test_fast_overrides_shrink_every_preset(tmp_path) -> None:
    folder = write_image_folder(tmp_path)
    for name in options("experiment"):
        data = [f"dataset.path={folder}"] if name == "dcgan" else []
        cfg = compose_config([f"experiment={name}", *FAST, *data])
        assert cfg.trainer.steps == 6


PINNED = {
    "model": ["latent_dim", "noise"],
    "model.g": ["hidden", "activation", "out_activation", "batch_norm", "dropout"],
    "model.d": ["hidden", "activation", "batch_norm", "dropout", "features"],
    "trainer": ["batch_size", "d_steps", "g_steps"],
}
PINNED_DCGAN = {  # convolutional nets: their widths, not an MLP's layers
    **PINNED,
    "model": ["arch", "latent_dim", "noise"],
    "model.g": ["channels", "batch_norm"],
    "model.d": ["channels", "batch_norm", "negative_slope", "features"],
}


@pytest.mark.parametrize("name", options("experiment"))
def test_presets_pin_every_setting_that_shapes_training(name: str) -> None:
    # A preset must not change when a dataset's default config does.
    preset = OmegaConf.load(CONFIGS / "experiment" / f"{name}.yaml")
    pinned = PINNED_DCGAN if preset.model.get("arch") == "dcgan" else PINNED
    for section, keys in pinned.items():
        node = OmegaConf.select(preset, section)
        missing = [k for k in keys if node is None or k not in node]
        assert not missing, f"{name} leaves {section}.{missing} to the dataset default"
    assert preset.trainer.get("steps") is not None or preset.trainer.get("epochs") is not None
