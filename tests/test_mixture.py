"""Gaussian mixtures: configs and presets, the stream, PacGAN's mode metrics, maxout, pictures,
and a short run that trains, resumes exactly, samples and evaluates."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import FAST, compose_config, equal_state, run_cli
from gantool.app.evaluate import evaluate_checkpoint
from gantool.app.job import train
from gantool.app.sample import sample_checkpoint
from gantool.config.compose import to_dict
from gantool.config.datasets import MixtureConfig
from gantool.config.metrics import HIGHER_IS_BETTER
from gantool.config.schema import run_length
from gantool.core.errors import ConfigError, GantoolError
from gantool.core.files import MetricsLog
from gantool.datasets.mixture import MIXTURE, mode_report, one_d_report
from gantool.datasets.registry import evaluate, family
from gantool.nn.metrics import ks_statistic, wasserstein1
from gantool.nn.mlp import Maxout
from gantool.training.checkpointer import latest_checkpoint
from gantool.training.codec import load as load_checkpoint
from gantool.training.gan import GAN

CPU = torch.device("cpu")
RING = [[math.cos(2 * math.pi * k / 8), math.sin(2 * math.pi * k / 8)] for k in range(8)]
GRID = [[float(i), float(j)] for i in range(-4, 5, 2) for j in range(-4, 5, 2)]
# The PacGAN nets shrunk to seconds; a finite set of 500 points: 5 batches of 100 an epoch.
SMALL = [
    *FAST,
    "device.num_threads=1",
    "model.g.hidden=[32,32]",
    "model.d.hidden=[16]",
    "dataset.num_samples=500",
    "trainer.num_samples=300",
    "trainer.num_eval_samples=500",
]


def ring(**kwargs) -> MixtureConfig:
    return MixtureConfig(**{"centres": RING, "std": 0.01, "weights": None, **kwargs})


# --- configs and presets ----------------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["ring", "grid"])
def test_ring_and_grid_are_pacgans_mixtures(dataset: str) -> None:
    cfg = compose_config([f"dataset={dataset}"])
    ds = cfg.dataset
    assert isinstance(ds, MixtureConfig) and family(ds) is MIXTURE
    centres, std = (RING, 0.01) if dataset == "ring" else (GRID, 0.05)
    assert np.allclose(ds.centres, centres, rtol=0, atol=1e-15)
    assert ds.stds() == [std] * len(centres) and ds.weights is None
    assert ds.probabilities() == [1 / len(centres)] * len(centres)
    assert ds.num_samples == 100_000 and not ds.endless
    # The default trains a shortened PacGAN, judged by a mode metric on 2,500 samples.
    assert cfg.trainer.objective == "eval/reverse_kl"
    assert cfg.trainer.steps == 10_000 and cfg.trainer.batch_size == 100 and cfg.trainer.reuse_fake
    assert cfg.trainer.num_samples == cfg.trainer.num_eval_samples == 2500
    assert cfg.model.d.activation == "maxout" and cfg.loss.r1_gamma == 0.0


def test_mixture_default_and_its_keys() -> None:
    cfg = compose_config(["dataset=mixture"])
    ds = cfg.dataset
    assert ds.dim == 1 and ds.endless and cfg.trainer.objective == "eval/w1"
    assert set(ds.eval_keys) == {
        "eval/modes",
        "eval/high_quality_percent",
        "eval/reverse_kl",
        "eval/w1",
        "eval/ks",
        "eval/mean",
        "eval/std",
        "eval/skewness",
        "eval/excess_kurtosis",
    }
    assert set(compose_config(["dataset=ring"]).dataset.eval_keys) == {
        "eval/modes",
        "eval/high_quality_percent",
        "eval/reverse_kl",
    }
    assert {"eval/modes", "eval/high_quality_percent"} <= HIGHER_IS_BETTER
    assert "eval/reverse_kl" not in HIGHER_IS_BETTER  # lower is better
    # The mixture's own moments are the 1-D targets: means -3, 0, 3 with weights ¼, ½, ¼.
    targets = MIXTURE.targets(ds)
    assert targets["eval/mean"] == 0.0
    assert targets["eval/std"] == pytest.approx(math.sqrt(0.25**2 + 0.5 * 9))
    assert targets["eval/skewness"] == 0.0 and targets["eval/reverse_kl"] == 0.0


@pytest.mark.parametrize("dataset", ["ring", "grid"])
def test_pacgan_presets_pin_the_reference(dataset: str) -> None:
    cfg = compose_config([f"experiment=pacgan_{dataset}"])
    flat = to_dict(cfg)
    assert isinstance(cfg.dataset, MixtureConfig)
    assert len(cfg.dataset.centres) == (8 if dataset == "ring" else 25)
    assert flat["dataset"]["std"] == (0.01 if dataset == "ring" else 0.05)
    assert flat["dataset"]["num_samples"] == 100_000 and flat["dataset"]["weights"] is None
    g, d = flat["model"]["g"], flat["model"]["d"]
    assert (flat["model"]["latent_dim"], flat["model"]["noise"]) == (2, "normal")
    assert g["hidden"] == [400] * 4 and (g["activation"], g["out_activation"]) == ("relu", "none")
    assert (g["bias"], g["batch_norm"], g["batch_norm_before_activation"]) == (False, True, True)
    assert (g["batch_norm_momentum"], g["batch_norm_eps"], g["init_std"]) == (0.05, 1e-4, 0.02)
    assert d["hidden"] == [200] * 3 and (d["activation"], d["pieces"]) == ("maxout", 5)
    assert (d["bias"], d["batch_norm"], d["init_std"], d["dropout"]) == (True, False, 0.02, 0.0)
    for net in ("g", "d"):
        assert flat["optimizer"][net] == {
            "name": "adam",
            "lr": 1e-4,
            "betas": [0.8, 0.999],
            "momentum": 0.0,
        }
    loss = flat["loss"]
    assert (loss["name"], loss["g_loss"], loss["r1_gamma"]) == ("bce", "non_saturating", 0.0)
    t = flat["trainer"]
    assert (t["steps"], t["epochs"], t["batch_size"], t["d_steps"], t["g_steps"]) == (
        None,
        400,
        100,
        1,
        1,
    )
    # The reference's G gradient uses the D update's noise: the G update reuses its fakes.
    assert (t["reuse_fake"], t["ema_decay"], t["num_samples"], t["num_eval_samples"]) == (
        True,
        0.0,
        2500,
        2500,
    )
    data = family(cfg.dataset).stream(cfg.dataset, 100, 0, CPU)
    assert run_length(cfg.trainer, data.batches_per_epoch) == 400_000  # 400 epochs of 1,000
    gan = GAN.build(cfg.model, cfg.optimizer, 0.0, (2,), CPU)
    g_layers = [type(m).__name__ for m in gan.generator.net]
    assert g_layers[:3] == ["Linear", "BatchNorm1d", "ReLU"] and g_layers.count("Linear") == 5
    assert [m.bias is None for m in gan.generator.net if isinstance(m, nn.Linear)] == [True] * 4 + [
        False
    ]
    d_linear = [m for m in gan.discriminator.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in d_linear] == [
        (2, 1000),
        (200, 1000),
        (200, 1000),
        (200, 1),
    ]
    assert all(float(m.bias.detach().abs().max()) == 0 for m in d_linear)
    weights = torch.cat([m.weight.detach().flatten() for m in d_linear])
    assert float(weights.std()) == pytest.approx(0.02, rel=0.02)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset.std=[0.1,0.2]", "dataset.std=[0.1, 0.2]: give one number, or one per component"),
        ("dataset.std=-1", "dataset.std=-1: must be > 0"),
        ("dataset.weights=[1,2]", "dataset.weights=[1.0, 2.0]: give one per component (8)"),
        ("dataset.weights=[1,1,1,1,1,1,1,0]", "dataset.weights[7]=0.0: must be > 0"),
        ("dataset.centres=[[0,0],[1]]", "dataset.centres[1]=[1]: every centre needs the same"),
        ("dataset.centres=[[0,0],[1,a]]", "dataset.centres[1][1]='a': must be a number"),
        ("dataset.centres=[1,2]", "dataset.centres[0]=1: each centre is a list of coordinates"),
        ("dataset.std=[1,2,3,4,5,6,7,x]", "dataset.std[7]='x': must be a number, or a list"),
        ("dataset.num_samples=0", "dataset.num_samples=0: must be >= 1"),
        ("trainer.objective=eval/w1", "trainer.objective='eval/w1' is not a choice"),
    ],
)
def test_bad_mixture_values_fail_with_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compose_config(["dataset=ring", override])
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_endless_mixture_has_no_epochs() -> None:
    with pytest.raises(ConfigError, match="the mixture dataset is endless"):
        compose_config(
            ["dataset=ring", "dataset.num_samples=null", "trainer.steps=null", "trainer.epochs=2"]
        )


def test_per_component_stds_whole_numbers_and_weights_compose() -> None:
    cfg = compose_config(["dataset=mixture", "dataset.std=[0.1,0.2,0.3]", "dataset.weights=null"])
    assert cfg.dataset.stds() == [0.1, 0.2, 0.3] and cfg.dataset.probabilities() == [1 / 3] * 3
    cfg = compose_config(["dataset=ring", "dataset.centres=[[0,0],[2,2]]", "dataset.std=1"])
    assert cfg.dataset.dim == 2 and cfg.dataset.stds() == [1.0, 1.0]
    assert family(cfg.dataset).stream(cfg.dataset, 4, 0, CPU).next_batch().dtype == torch.float32


# --- the stream --------------------------------------------------------------------------------
def test_an_endless_stream_is_seeded_and_resumes() -> None:
    cfg = ring(num_samples=None, weights=[1, 1, 1, 1, 1, 1, 1, 5])
    a = family(cfg).stream(cfg, 64, 3, CPU)
    assert a.batches_per_epoch is None and a.data_dim == 2
    first = a.next_batch()
    assert first.shape == (64, 2) and first.dtype == torch.float32
    saved = a.state_dict()
    rest = [a.next_batch() for _ in range(3)]
    b = family(cfg).stream(cfg, 64, 3, CPU)
    b.load_state_dict(saved)
    assert all(
        torch.equal(x, y) for x, y in zip(rest, [b.next_batch() for _ in range(3)], strict=True)
    )
    assert not torch.equal(first, family(cfg).stream(cfg, 64, 4, CPU).next_batch())  # another seed
    # Weighted: the last component (5 of 12) takes about 42% of many draws.
    many = a.draw(60_000)
    share = float(((many - torch.tensor(RING[7])).norm(dim=1) < 0.1).float().mean())
    assert share == pytest.approx(5 / 12, abs=0.01)
    assert float((many - torch.tensor(RING[7])).norm(dim=1).min()) < 0.01


def test_a_finite_set_is_read_in_epochs() -> None:
    cfg = ring(num_samples=250)
    data = family(cfg).stream(cfg, 100, 0, CPU)
    assert data.batches_per_epoch == 2  # the last 50 points of each epoch's order are dropped
    points = data.points.clone()
    assert points.shape == (250, 2) and torch.equal(
        points, family(cfg).stream(cfg, 100, 0, CPU).points
    )
    assert not torch.equal(
        points, family(cfg).stream(cfg, 100, 1, CPU).points
    )  # drawn from the seed
    epoch0 = torch.cat([data.next_batch() for _ in range(2)])
    # Every batch comes from the set, no point twice in one epoch.
    assert len({tuple(p) for p in epoch0.tolist()}) == 200
    assert {tuple(p) for p in epoch0.tolist()} <= {tuple(p) for p in points.tolist()}
    saved = data.state_dict()
    assert (saved["epoch"], saved["position"]) == (0, 200)
    after = [data.next_batch() for _ in range(3)]  # epochs 1 and 2, each reshuffled
    assert data.epochs.epoch == 2
    again = family(cfg).stream(cfg, 100, 0, CPU)
    again.load_state_dict(saved)
    assert all(
        torch.equal(x, y)
        for x, y in zip(after, [again.next_batch() for _ in range(3)], strict=True)
    )
    with pytest.raises(GantoolError, match=r"trainer.batch_size=300 is larger than"):
        family(cfg).stream(cfg, 300, 0, CPU)
    epochs = compose_config(["dataset=ring", "trainer.steps=null", "trainer.epochs=3"])
    assert run_length(epochs.trainer, 1000) == 3000


def test_one_component_in_1d_is_the_gaussian_stream() -> None:
    gaussian = compose_config([]).dataset
    mixture = MixtureConfig(centres=[[gaussian.mean]], std=gaussian.std, weights=None)
    a, b = (
        family(gaussian).stream(gaussian, 512, 7, CPU),
        family(mixture).stream(mixture, 512, 7, CPU),
    )
    for _ in range(3):
        assert torch.equal(a.next_batch(), b.next_batch())


# --- PacGAN's metrics --------------------------------------------------------------------------
def test_samples_at_the_centres_capture_every_mode() -> None:
    report = mode_report(torch.tensor(RING * 10), ring())
    assert report == {
        "modes": 8,
        "high_quality_percent": 100.0,
        "reverse_kl": 0.0,
        "mode_counts": [10] * 8,
    }


def test_all_on_one_centre_is_one_mode_and_kl_ln_k() -> None:
    one = torch.tensor([RING[2]] * 50)
    report = mode_report(one, ring())
    assert report["modes"] == 1 and report["high_quality_percent"] == 100.0
    assert report["reverse_kl"] == pytest.approx(math.log(8))  # uncaptured modes add 0 log 0
    grid = MixtureConfig(centres=GRID, std=0.05, weights=None)
    assert mode_report(torch.tensor([GRID[0]] * 5), grid)["reverse_kl"] == pytest.approx(
        math.log(25)
    )


def test_high_quality_is_within_three_stds_of_the_nearest_centre() -> None:
    # 2.99 and 3.01 stds from centre 0 (along x): in and out; far away and NaN: never.
    samples = torch.tensor([[1.0299, 0.0], [1.0301, 0.0], [5.0, 5.0], [math.nan, 0.0]])
    report = mode_report(samples, ring())
    assert report["mode_counts"] == [1, 0, 0, 0, 0, 0, 0, 0]
    assert report["high_quality_percent"] == 25.0 and report["reverse_kl"] == pytest.approx(
        math.log(8)
    )
    nothing = mode_report(torch.tensor([[5.0, 5.0]]), ring())
    assert nothing["modes"] == 0 and nothing["high_quality_percent"] == 0.0
    assert math.isnan(nothing["reverse_kl"])


def test_distances_are_in_each_components_own_std() -> None:
    cfg = MixtureConfig(centres=[[0.0], [10.0]], std=[1.0, 0.1], weights=[3.0, 1.0])
    # 2.5 from 0 is 2.5 stds (in); 9.5 is 5 stds of the second (out), 7.5 from the first (out).
    report = mode_report(torch.tensor([[2.5], [9.5], [10.05]]), cfg)
    assert report["mode_counts"] == [1, 1]
    # KL of the histogram (½, ½) from the weights (¾, ¼), in nats.
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert report["reverse_kl"] == pytest.approx(expected)


def test_one_d_numbers_match_the_gaussians_for_one_component() -> None:
    samples = torch.randn(5000, 1, generator=torch.Generator().manual_seed(0)) * 1.3 + 4.1
    cfg = MixtureConfig(centres=[[4.0]], std=1.25, weights=None)
    report = one_d_report(samples, cfg)
    assert report["ks"] == pytest.approx(ks_statistic(samples, 4.0, 1.25), abs=1e-12)
    assert report["w1"] == pytest.approx(wasserstein1(samples, 4.0, 1.25), abs=1e-9)


def test_one_d_targets_are_the_mixtures_moments() -> None:
    cfg = MixtureConfig(centres=[[-1.0], [2.0]], std=[0.5, 1.0], weights=[2.0, 1.0])
    data = family(cfg).stream(cfg, 400_000, 0, CPU).next_batch()
    report, targets = one_d_report(data, cfg), MIXTURE.targets(cfg)
    for key in ("mean", "std", "skewness", "excess_kurtosis"):
        assert report[key] == pytest.approx(targets[f"eval/{key}"], abs=0.02), key
    assert report["ks"] < 0.005 and report["w1"] < 0.01


def test_evaluate_is_seeded_and_leaves_the_training_rng_alone() -> None:
    cfg = compose_config(["dataset=ring", *SMALL])
    gan = GAN.build(cfg.model, cfg.optimizer, 0.0, (2,), CPU)
    before = torch.get_rng_state()
    result = evaluate(cfg, gan.generator, CPU, 700, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    assert result == evaluate(cfg, gan.generator, CPU, 700, seed=5)
    assert set(result) == {"eval/num_samples", "eval/mode_counts", *cfg.dataset.eval_keys}
    assert result["eval/num_samples"] == 700 and sum(result["eval/mode_counts"]) <= 700

    class OnCentres(nn.Module):  # a perfect generator: every sample on a centre, in turn
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.tensor(RING).repeat(len(z) // 8 + 1, 1)[: len(z)]

    perfect = evaluate(cfg, OnCentres(), CPU, 800)
    assert (perfect["eval/modes"], perfect["eval/high_quality_percent"]) == (8, 100.0)
    assert perfect["eval/reverse_kl"] == 0.0


# --- maxout and PacGAN's blocks ----------------------------------------------------------------
def test_maxout_keeps_the_largest_of_each_group_of_pieces() -> None:
    x = torch.randn(7, 12)
    out = Maxout(3)(x)
    assert out.shape == (7, 4)
    expected = torch.stack([x[:, 3 * i : 3 * i + 3].max(dim=1).values for i in range(4)], dim=1)
    assert torch.equal(out, expected)
    cfg = compose_config(["model.d.activation=maxout", "model.d.pieces=4", "model.d.hidden=[6]"])
    d = GAN.build(cfg.model, cfg.optimizer, 0.0, (1,), CPU).discriminator
    assert [type(m).__name__ for m in d.net] == ["Linear", "Maxout", "Linear"]
    assert d.net[0].out_features == 24 and d.net[2].in_features == 6
    assert d(torch.randn(5, 1)).shape == (5, 1)
    with pytest.raises(ConfigError, match=r"model.g.out_activation='maxout' is not a choice"):
        compose_config(["model.g.out_activation=maxout"])
    with pytest.raises(ConfigError, match=r"model.d.pieces=0: must be >= 1"):
        compose_config(["model.d.pieces=0"])


def test_the_existing_blocks_are_unchanged() -> None:
    """The new settings' defaults build the very modules, in the same order, as before."""
    cfg = compose_config(["dataset=mnist"])
    torch.manual_seed(0)
    g = GAN.build(cfg.model, cfg.optimizer, 0.0, (784,), CPU).generator
    assert [type(m).__name__ for m in g.net][:3] == ["Linear", "LeakyReLU", "BatchNorm1d"]
    assert all(m.bias is not None for m in g.net if isinstance(m, nn.Linear))
    torch.manual_seed(0)
    plain = nn.Linear(100, 256)
    assert torch.equal(g.net[0].weight, plain.weight)  # PyTorch's own initialisation


# --- pictures, a run, resume, sample, eval, sweep ----------------------------------------------
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_pictures_in_every_dimension(dim: int, tmp_path: Path) -> None:
    cfg = MixtureConfig(centres=[[0.0] * dim, [2.0] * dim], std=0.1, weights=None)
    samples = family(cfg).stream(cfg, 500, 0, CPU).next_batch()
    png = MIXTURE.picture(samples, cfg, ".png", "step 1")
    width, height = Image.open(io.BytesIO(png)).size
    assert width > (900 if dim > 1 else 500) and height > 350  # two panels side by side in 2-D
    assert MIXTURE.picture(samples, cfg, ".svg", "").startswith(b"<?xml")
    assert MIXTURE.values(samples, cfg).shape == ((500,) if dim == 1 else (500, dim))
    MIXTURE.picture(torch.full((10, dim), math.nan), cfg, ".png", "no finite samples")


def test_a_ring_run_trains_resumes_exactly_samples_and_evaluates(tmp_path: Path) -> None:
    base = ["dataset=ring", *SMALL, "trainer.log_every=2", "trainer.checkpoint_every=3"]
    full, split = tmp_path / "full", tmp_path / "split"
    summary = train(compose_config([*base, "trainer.steps=8"]), full)
    train(compose_config([*base, "trainer.steps=3"]), split)  # stops between log rows
    assert train(compose_config([*base, "trainer.steps=8"]), split)["step"] == 8
    a, b = (load_checkpoint(latest_checkpoint(d)) for d in (full, split))
    assert a.stream["epoch"] == 1  # 8 batches of 100 from 500 points: into the second epoch
    for part in a.gan:
        assert equal_state(a.gan[part], b.gan[part]), part
    assert equal_state(a.rng, b.rng) and equal_state(a.stream, b.stream)
    assert MetricsLog(full / "metrics.jsonl").rows() == MetricsLog(split / "metrics.jsonl").rows()

    assert summary["objective"]["name"] == "eval/reverse_kl"
    assert summary["eval"]["eval/num_samples"] == 500 and 0 <= summary["eval"]["eval/modes"] <= 8
    assert sorted(p.name for p in (full / "plots").iterdir()) == ["losses.png"]
    assert (full / "samples" / "step_0000008.png").is_file()

    _, npy = sample_checkpoint(full, 300, tmp_path / "s.npy", seed=1, device_name="cpu")
    assert np.load(npy).shape == (300, 2)
    _, png = sample_checkpoint(full, None, None, seed=1, device_name="cpu")
    assert png == full / "samples" / "sample_step_0000008.png" and png.stat().st_size > 10_000
    with pytest.raises(ConfigError, match="Gaussian mixture samples are written as"):
        sample_checkpoint(full, 10, tmp_path / "s.csv", seed=1, device_name="cpu")
    _, results, out = evaluate_checkpoint(full, None, 0, "cpu")
    assert out == full / "eval.json" and results == summary["eval"]  # seed 0, as at the end
    assert json.loads(out.read_text())["objective"]["name"] == "eval/reverse_kl"


def test_a_1d_mixture_run_draws_histograms_and_moments(tmp_path: Path) -> None:
    summary = train(compose_config(["dataset=mixture", *FAST, "device.num_threads=1"]), tmp_path)
    assert {"eval/w1", "eval/ks", "eval/modes"} <= set(summary["eval"])
    assert summary["targets"]["eval/mean"] == 0.0
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["losses.png", "moments.png"]


def test_a_two_job_sweep_through_the_cli(tmp_path: Path) -> None:
    done = run_cli(
        "train", "-m", "dataset=grid", *SMALL, "trainer.seed=0,1", cwd=tmp_path, timeout=240
    )
    assert done.returncode == 0, done.stderr
    jobs = sorted(p.parent for p in (tmp_path / "outputs" / "multirun").rglob("summary.json"))
    assert len(jobs) == 2
    values = [json.loads((j / "summary.json").read_text())["objective"] for j in jobs]
    assert all(v["name"] == "eval/reverse_kl" for v in values)
