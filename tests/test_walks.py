"""`gantool sample --interpolate` and `--truncation`: latent walks and truncated noise, and
`--label` by class name. The paths and the redraws are checked on tensors; the command on a
tiny conditional MNIST run and a tiny Gaussian run with uniform noise, both trained once here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import (
    FAST,
    compose_config,
    digest,
    mnist_overrides,
    one_error_line,
    run_main,
    write_tiny_mnist,
)
from gantool.app import sample as sampling
from gantool.app.job import train
from gantool.config.schema import ModelConfig
from gantool.core.errors import ConfigError
from gantool.datasets.registry import family
from gantool.nn.latent import draw_latent, truncate, walk
from gantool.nn.mlp import generate
from gantool.training.trained import load_generator

TWO_STEPS = ["trainer.steps=2", "trainer.checkpoint_every=2", "trainer.sample_every=2"]
QUICK = ["trainer.eval_at_end=false", "device.num_threads=1", *TWO_STEPS]


@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A conditional MNIST generator with normal noise, two steps old, small nets."""
    folder = tmp_path_factory.mktemp("cgan")
    shrunk = [
        "experiment=cgan_mnist",
        "trainer.epochs=null",
        "trainer.batch_size=16",
        "model.g.hidden=[32]",
        "model.d.hidden=[32]",
        *QUICK,
    ]
    run = folder / "run"
    train(compose_config(mnist_overrides(write_tiny_mnist(folder / "data"), *shrunk)), run)
    return run


@pytest.fixture(scope="module")
def uniform_gaussian_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 1-D Gaussian (not images) from uniform noise."""
    run = tmp_path_factory.mktemp("uniform") / "run"
    train(compose_config([*FAST, "model.noise=uniform", *QUICK]), run)
    return run


# --- paths and truncated noise, on tensors ------------------------------------------------------
def test_slerp_keeps_norms_between_the_ends_and_hits_both() -> None:
    cfg = ModelConfig(latent_dim=64)
    g = torch.Generator().manual_seed(0)
    start, end = torch.randn(5, 64, generator=g), 2 * torch.randn(5, 64, generator=g)
    path = walk(start, end, 9, cfg)  # (5, 9, 64)
    assert torch.equal(path[:, 0], start) and torch.equal(path[:, -1], end)
    norms = path.norm(dim=2)
    # The length moves linearly from |start| to |end|: never through the small middle that a
    # straight line between two Gaussian latents crosses.
    expected = torch.lerp(
        start.norm(dim=1)[:, None], end.norm(dim=1)[:, None], torch.linspace(0, 1, 9)
    )
    assert torch.allclose(norms, expected, rtol=1e-5)
    line_middle = ((start + end) / 2).norm(dim=1)
    assert (norms[:, 4] > line_middle * 1.2).all()
    # On the great circle, at even angles: each step turns the same angle.
    unit = path / norms[..., None]
    angles = (unit[:, 1:] * unit[:, :-1]).sum(dim=2).clamp(-1, 1).acos()  # (5, 8)
    assert torch.allclose(angles, angles[:, :1].expand_as(angles), atol=1e-4)
    total = start / start.norm(dim=1, keepdim=True) * end / end.norm(dim=1, keepdim=True)
    assert torch.allclose(angles.sum(dim=1), total.sum(dim=1).clamp(-1, 1).acos(), atol=1e-4)


def test_uniform_walks_are_straight_and_a_class_stays_fixed() -> None:
    cfg = ModelConfig(latent_dim=8, noise="uniform", conditional=True)
    g = torch.Generator().manual_seed(1)
    classes = torch.tensor([2, 7, 7])
    start = draw_latent(3, cfg, torch.device("cpu"), g, classes)
    end = draw_latent(3, cfg, torch.device("cpu"), g, torch.tensor([5, 5, 5]))  # ignored
    path = walk(start, end, 5, cfg)  # (3, 5, 9): the class column last
    assert (path[..., -1] == classes[:, None].float()).all()
    assert torch.allclose(path[:, 2, :-1], (start[:, :-1] + end[:, :-1]) / 2)
    assert path[..., :-1].min() >= 0 and path[..., :-1].max() < 1  # inside the cube


def test_truncation_bounds_every_coordinate_and_repeats_per_seed() -> None:
    cfg = ModelConfig(latent_dim=100, conditional=True)
    cpu = torch.device("cpu")
    classes = torch.arange(64) % 10
    global_rng = torch.get_rng_state()

    def draw(seed: int, truncation: float | None = 0.5) -> torch.Tensor:
        return draw_latent(64, cfg, cpu, torch.Generator().manual_seed(seed), classes, truncation)

    z = draw(3)
    assert torch.equal(z, draw(3)) and not torch.equal(z, draw(4))
    noise = z[:, :-1]
    assert noise.abs().max() <= 0.5 and torch.equal(z[:, -1], classes.float())
    # Redrawn, not clamped: N(0, 1) truncated to ±0.5 puts 51.6% of its mass within ±0.25
    # (Φ(.25) - Φ(-.25)) / (Φ(.5) - Φ(-.5)); a clamp would pile 62% on ±0.5 itself.
    inner = (noise.abs() < 0.25).float().mean().item()
    assert abs(inner - 0.5157) < 0.03, inner
    assert (noise.abs() == 0.5).sum() == 0
    # The values already inside are the untruncated draw's own.
    plain = draw(3, None)[:, :-1]
    kept = plain.abs() <= 0.5
    assert torch.equal(noise[kept], plain[kept])
    assert torch.equal(torch.get_rng_state(), global_rng)  # the global RNG never moved
    tight = truncate(torch.randn(10_000), 0.01, torch.Generator().manual_seed(0))
    assert tight.abs().max() <= 0.01  # the CLI's least T finishes within the bound


def test_class_names_and_indices() -> None:
    model = ModelConfig(conditional=True, num_classes=3)
    names = ("cat", "dog", "3")
    assert sampling.class_index("dog", model, names) == 1
    assert sampling.class_index("Cat", model, names) == 0  # one name folds to it
    assert sampling.class_index("3", model, names) == 2  # a name before an index
    assert sampling.class_index(1, model, names) == 1
    with pytest.raises(ConfigError, match=r"--label cow: not a class of this generator; its "
                       r"classes: cat, dog, 3$"):  # fmt: skip
        sampling.class_index("cow", model, names)
    with pytest.raises(ConfigError, match="draws classes 0 to 2"):
        sampling.class_index("5", model, names)


# --- the command ---------------------------------------------------------------------------------
def test_a_walk_has_k_points_and_its_ends_are_plain_samples(cgan_run, tmp_path) -> None:
    common = ["--num", 10, "--seed", 7, "--device", "cpu"]
    walks_npy, plain_npy = tmp_path / "w.npy", tmp_path / "p.npy"
    assert run_main("sample", cgan_run, "--interpolate", 5, "--out", walks_npy, *common) == 0
    assert run_main("sample", cgan_run, "--out", plain_npy, *common) == 0
    walks, plain = np.load(walks_npy), np.load(plain_npy)
    assert walks.shape == (10, 5, 28, 28)
    assert np.array_equal(walks[:, 0], plain)  # it starts at `gantool sample` of the seed
    # ... and ends at the next draw of the same generator, each path in its own class
    trained = load_generator(cgan_run, "cpu")
    latents = sampling.Latents(trained, 10, 7, None, None)
    start, end = latents.draw(), latents.draw()
    ds = trained.config.dataset
    last = family(ds).values(generate(trained.generator, end), ds).numpy()
    assert np.array_equal(walks[:, -1], last)
    assert torch.equal(start[:, -1], end[:, -1])  # both ends of a path: one class
    assert not np.array_equal(walks[:, 1], walks[:, 2])  # the noise moves between them

    gif = tmp_path / "w.gif"
    assert run_main("sample", cgan_run, "--interpolate", 3, "--num", 4, "--out", gif) == 0
    assert Image.open(gif).n_frames == 3 and Image.open(gif).size[0] >= 480

    # A truncated walk starts at the truncated plain sample of its seed.
    truncated = [*common, "--truncation", 0.5, "--label", "3"]
    for name, walking in (("t.npy", ["--interpolate", 2]), ("tp.npy", [])):
        assert run_main("sample", cgan_run, *walking, *truncated, "--out", tmp_path / name) == 0
    assert np.array_equal(np.load(tmp_path / "t.npy")[:, 0], np.load(tmp_path / "tp.npy"))
    assert not np.array_equal(np.load(tmp_path / "tp.npy"), plain)
    assert run_main("sample", cgan_run, "--interpolate", 4, "--out", tmp_path / "s.png") == 0
    assert Image.open(tmp_path / "s.png").size[0] >= 480  # 10 rows (one a class) of 4 points


def test_pictures_say_truncation_and_labels_take_names(cgan_run, tmp_path, monkeypatch) -> None:
    recorded: list[str] = []
    original = sampling.picture

    def record(samples, dataset, fmt, title="", classes=None) -> bytes:
        recorded.append(title)
        assert classes is not None and (classes == 3).all()  # the class "3", by its name
        return original(samples, dataset, fmt, title, classes)

    monkeypatch.setattr(sampling, "picture", record)
    args = ["--label", "3", "--truncation", 0.75, "--num", 4, "--device", "cpu"]
    assert run_main("sample", cgan_run, *args, "--out", tmp_path / "t.png") == 0
    assert run_main("sample", cgan_run, *args, "--interpolate", 3) == 0  # into samples/
    assert recorded == ["step 2, truncation 0.75"] + [
        f"step 2, truncation 0.75, point {k}/3" for k in (1, 2, 3)
    ]
    assert (cgan_run / "samples" / "walk_step_0000002_label_3_truncation_0.75.gif").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--label", "cat"], "--label cat: not a class of this generator; its classes: 0, 1, 2"),
        (["--interpolate", 1], "--interpolate 1: must be from 2 to 1,000"),
        (["--truncation", 0], "--truncation 0: must be a number from 0.01"),
        (["--truncation", "nan"], "--truncation nan: must be a number from 0.01"),
        (["--out", "x.gif"], "a .gif is a latent walk; add --interpolate K"),
        (["--interpolate", 3, "--out", "x.csv"], "accepted: .gif (an animation), .png (a strip)"),
        (["--interpolate", 200, "--num", 100, "--out", "x.png"], "holds at most 10,000"),
    ],
)
def test_a_bad_walk_argument_is_one_line_and_writes_nothing(
    cgan_run, tmp_path, capsys, args, message
) -> None:
    args = [tmp_path / a if a in ("x.gif", "x.csv", "x.png") else a for a in args]
    before = digest(tmp_path), digest(cgan_run)
    assert run_main("sample", cgan_run, *args) == 2
    assert message in one_error_line(capsys)
    assert (digest(tmp_path), digest(cgan_run)) == before


def test_non_images_and_uniform_noise_are_refused(uniform_gaussian_run, tmp_path, capsys) -> None:
    before = digest(tmp_path), digest(uniform_gaussian_run)
    out = tmp_path / "walk.gif"
    assert run_main("sample", uniform_gaussian_run, "--interpolate", 4, "--out", out) == 2
    assert "--interpolate 4: Gaussian samples are not images" in one_error_line(capsys)
    assert run_main("sample", uniform_gaussian_run, "--interpolate", 4) == 2  # no --out either
    one_error_line(capsys)
    assert run_main("sample", uniform_gaussian_run, "--truncation", 1.5) == 2
    assert "--truncation 1.5: this generator's noise is uniform" in one_error_line(capsys)
    assert (digest(tmp_path), digest(uniform_gaussian_run)) == before
