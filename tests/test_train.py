"""End-to-end training through train(cfg, run_dir): outputs, resume, and sampling."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import FAST, compose_config, equal_state, mnist_overrides
from gantool.app.job import train
from gantool.app.sample import sample_checkpoint
from gantool.core.errors import GantoolError
from gantool.core.files import MetricsLog
from gantool.nn.mlp import Generator, generate, sample_latent
from gantool.training.checkpointer import latest_checkpoint
from gantool.training.codec import load as load_checkpoint
from gantool.training.gan import GAN
from gantool.training.step import STAT_KEYS


def test_gaussian_run_fills_its_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    summary = train(compose_config(FAST), run)
    rows = MetricsLog(run / "metrics.jsonl").rows()
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert set(rows[0]) == {"step", *STAT_KEYS}
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last.pt", "step_0000003.pt", "step_0000006.pt"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "progress.gif",
        "step_0000003.png",
        "step_0000006.png",
    ]
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["losses.png", "moments.png"]
    assert json.loads((run / "summary.json").read_text())["step"] == 6
    assert set(summary["eval"]) == {
        "eval/num_samples",
        *(f"eval/{k}" for k in ("mean", "std", "skewness", "excess_kurtosis", "ks", "w1")),
    }
    assert summary["objective"] == {"name": "eval/w1", "value": summary["eval"]["eval/w1"]}
    assert summary["first_step_time"] < time.time()
    assert 0 < summary["train_seconds"] < summary["wall_seconds"]
    assert sorted(p.name for p in run.iterdir()) == [
        ".lock",  # held while a process trains here; holds its PID
        "checkpoints",
        "metrics.jsonl",
        "plots",
        "samples",
        "summary.json",
    ]


def test_checkpoint_holds_the_whole_state(tmp_path: Path) -> None:
    cfg = compose_config(FAST)
    train(cfg, tmp_path)
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state.step == 6
    assert set(torch.load(latest_checkpoint(tmp_path), weights_only=True)) == {
        "format",
        "step",
        "gan",
        "data",
        "rng",
        "fixed_noise",
        "stats",
        "config",
        "started_in",  # the working folder: what a relative dataset.root is relative to
        "watch",  # periodic evaluation's best, early stop's count, rollbacks (training.watch)
    }
    assert set(state.gan) == {"generator", "discriminator", "g_optimizer", "d_optimizer", "ema"}
    assert set(state.rng[0]) >= {"torch", "numpy", "python"}
    assert state.fixed_noise.shape == (cfg.trainer.num_samples, cfg.model.latent_dim)
    assert state.config["trainer"]["steps"] == 6
    assert state.started_in == str(Path.cwd())


def test_mnist_run_on_a_tiny_idx_file(tmp_path: Path, tiny_mnist: Path) -> None:
    run = tmp_path / "run"
    summary = train(compose_config(mnist_overrides(tiny_mnist)), run)
    grid = Image.open(summary["samples"])
    assert grid.size == (484, 520)  # an 8x8 grid of 28px digits, drawn 2x, with a title
    assert summary["eval"]["eval/num_samples"] == 32  # half the 64 images: the reference
    assert summary["objective"]["name"] == "eval/fld"
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["losses.png"]
    assert not (tiny_mnist / "MNIST" / "processed").exists()


def test_epochs_set_the_length_for_mnist(tmp_path: Path, tiny_mnist: Path) -> None:
    # 64 images at batch 16 is 4 batches an epoch; 2 D steps use 2 batches each step.
    cfg = compose_config(
        mnist_overrides(tiny_mnist, "trainer.steps=null", "trainer.epochs=3", "trainer.d_steps=2")
    )
    assert train(cfg, tmp_path)["step"] == 6


@pytest.mark.skipif("GANTOOL_MNIST_ROOT" not in os.environ, reason="GANTOOL_MNIST_ROOT not set")
def test_real_mnist_test_split_trains(tmp_path: Path) -> None:
    overrides = [
        "experiment=seed_mnist",
        f"dataset.root={os.environ['GANTOOL_MNIST_ROOT']}",
        "dataset.split=test",
        "dataset.download=false",
        *FAST,
        "trainer.steps=30",
        "trainer.log_every=10",
        "trainer.eval_at_end=false",  # the LeNet behind it trains for a minute: see test_evaluate
    ]
    summary = train(compose_config(overrides), tmp_path)
    rows = MetricsLog(tmp_path / "metrics.jsonl").rows()
    assert len(rows) == 3 and all(r["train/d_loss"] > 0 for r in rows)
    # 30 Adam steps move G's output from noise toward the dark background of real digits.
    assert rows[-1]["train/fake_mean"] < rows[0]["train/fake_mean"]
    assert Image.open(summary["samples"]).size == (604, 640)  # the preset's 10x10 digits, 2x


RESUME_CASES = {
    "gaussian": [],
    "gaussian with EMA": ["trainer.ema_decay=0.9"],
    "seed_gaussian (20 D and G steps)": ["experiment=seed_gaussian", "trainer.batch_size=50"],
    "keras_mnist (BatchNorm) with EMA": [
        "MNIST",
        "experiment=keras_mnist",
        "trainer.ema_decay=0.5",
    ],
    "mnist with dropout": ["MNIST", "model.d.dropout=0.3", "optimizer=sgd"],
    "conditional dcgan with diffaugment": [
        "MNIST",
        "model=dcgan",
        "model.g.channels=[8,4]",
        "model.d.channels=[4,8]",
        "model.latent_dim=8",
        "model.conditional=true",
        "trainer.augment=diffaugment",
    ],
}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_resume_continues_exactly_where_it_stopped(tmp_path: Path, tiny_mnist: Path, case):
    extra = RESUME_CASES[case]
    mnist = extra[:1] == ["MNIST"]
    base = mnist_overrides(tiny_mnist, *extra[1:]) if mnist else [*extra, *FAST]
    full, split = tmp_path / "full", tmp_path / "split"
    train(compose_config([*base, "trainer.steps=7"]), full)
    train(compose_config([*base, "trainer.steps=3"]), split)  # stops between log rows
    summary = train(compose_config([*base, "trainer.steps=7"]), split)
    assert summary["step"] == 7

    a, b = (load_checkpoint(latest_checkpoint(d)) for d in (full, split))
    assert a.step == b.step == 7
    assert a.gan.keys() == b.gan.keys()
    for part in a.gan:
        assert equal_state(a.gan[part], b.gan[part]), part
    assert equal_state(a.rng, b.rng) and equal_state(a.stream, b.stream)
    assert MetricsLog(full / "metrics.jsonl").rows() == MetricsLog(split / "metrics.jsonl").rows()


def test_resume_refuses_a_different_model(tmp_path: Path) -> None:
    train(compose_config(FAST), tmp_path)
    with pytest.raises(GantoolError, match=r"model\.g\.hidden \(\[16, 16\] -> \[8\]\)"):
        train(compose_config([*FAST, "model.g.hidden=[8]", "trainer.steps=9"]), tmp_path)


def test_sample_from_a_run_folder_and_a_checkpoint(tmp_path: Path, tiny_mnist: Path) -> None:
    gaussian, mnist = tmp_path / "gaussian", tmp_path / "mnist"
    train(compose_config(FAST), gaussian)
    train(compose_config(mnist_overrides(tiny_mnist)), mnist)

    _, csv = sample_checkpoint(gaussian, 500, tmp_path / "g.csv", seed=1, device_name="cpu")
    assert csv == tmp_path / "g.csv"
    values = csv.read_text().splitlines()
    assert values[0] == "x" and len(values) == 501
    _, again = sample_checkpoint(gaussian, 500, tmp_path / "h.csv", seed=1, device_name="cpu")
    assert again.read_text() == csv.read_text()  # same seed, same samples

    _, grid = sample_checkpoint(mnist / "checkpoints" / "step_0000003.pt", 16, None, 0, "cpu")
    assert grid == mnist / "samples" / "sample_step_0000003.png"
    # a 4x4 grid (122 px) drawn 4x, under a title band
    assert Image.open(grid).size == (4 * (2 + 4 * 30), 4 * (2 + 4 * 30) + 36)


def test_ema_is_the_moving_average_of_the_generator() -> None:
    cfg = compose_config([*FAST, "trainer.ema_decay=0.9", "model.g.batch_norm=true"])
    gan = GAN.build(cfg.model, cfg.optimizer, cfg.trainer.ema_decay, (1,), torch.device("cpu"))
    with torch.no_grad():
        for p in gan.generator.parameters():
            p.fill_(1.0)
        for p in gan.ema.parameters():
            p.fill_(0.0)
    gan.generator(torch.rand(64, cfg.model.latent_dim))  # moves BatchNorm's running stats
    ema_buffers = [b.clone() for b in gan.ema.buffers()]
    gan.update_ema(0.9)
    for p in gan.ema.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.1))  # 0.9 * 0 + 0.1 * 1
    # G's BatchNorm statistics do not fit the EMA's weights: calibrate_ema measures its own.
    for before, after in zip(ema_buffers, gan.ema.buffers(), strict=True):
        assert torch.equal(before, after)
    assert gan.sampler is gan.ema
    assert not any(p.requires_grad for p in gan.ema.parameters())


def test_ema_is_what_samples_and_reports_use(tmp_path: Path) -> None:
    cfg = compose_config([*FAST, "trainer.ema_decay=0.5"])
    train(cfg, tmp_path)
    state = load_checkpoint(latest_checkpoint(tmp_path))
    g, ema = state.gan["generator"], state.gan["ema"]
    assert any(not torch.equal(g[k], ema[k]) for k in g)

    _, csv = sample_checkpoint(tmp_path, 100, tmp_path / "s.csv", seed=3, device_name="cpu")
    G = Generator(cfg.model, 1)
    G.load_state_dict(ema)
    z = sample_latent(100, cfg.model, torch.device("cpu"), torch.Generator().manual_seed(3))
    expected = generate(G, z)[:, 0]
    written = torch.tensor([float(v) for v in csv.read_text().splitlines()[1:]])
    assert torch.allclose(written, expected.float(), rtol=1e-5, atol=1e-5)


def test_eval_scores_a_run_and_writes_eval_json(tmp_path: Path, capsys) -> None:
    from gantool.app.cli import main

    summary = train(compose_config([*FAST, "trainer.ema_decay=0.5"]), tmp_path)
    main(["eval", str(tmp_path), "--num", "1000", "--device", "cpu"])
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written["step"] == 6 and written["checkpoint"].endswith("step_0000006.pt")
    # The same generator (the EMA), noise and sample count as the end-of-run evaluation.
    assert written["eval"] == summary["eval"]
    assert written["objective"] == {"name": "eval/w1", "value": summary["eval"]["eval/w1"]}
    out = capsys.readouterr().out
    assert "KS statistic" in out and "eval.json" in out


@pytest.mark.parametrize("dataset", ["gaussian", "mnist"])
def test_tensorboard_and_the_progress_gif(tmp_path: Path, tiny_mnist: Path, dataset) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = FAST if dataset == "gaussian" else mnist_overrides(tiny_mnist)
    run = tmp_path / "run"
    train(compose_config([*overrides, "logger=tensorboard", "trainer.sample_every=2"]), run)
    events = EventAccumulator(str(run / "tensorboard")).Reload().Tags()
    assert {"train/d_loss", "train/g_loss", "train/fake_std"} <= set(events["scalars"])
    assert ("eval/w1" if dataset == "gaussian" else "eval/fld") in events["scalars"]
    assert events["images"] == ["samples"]  # each sample picture
    gif = Image.open(run / "samples" / "progress.gif")
    assert gif.n_frames == 3  # steps 2, 4 and 6


def test_ema_batch_norm_statistics_are_its_own(tiny_mnist: Path) -> None:
    from gantool.training.gan import CALIBRATION_BATCH_SIZE, CALIBRATION_BATCHES

    cfg = compose_config(mnist_overrides(tiny_mnist, "trainer.ema_decay=0.5"))
    cpu = torch.device("cpu")
    gan = GAN.build(cfg.model, cfg.optimizer, cfg.trainer.ema_decay, (784,), cpu)
    with torch.no_grad():  # EMA weights unlike G's, as after training
        for p in gan.ema.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    gan.calibrate_ema(cfg.model, cpu)
    first_norm = next(m for m in gan.ema.modules() if isinstance(m, torch.nn.BatchNorm1d))
    noise = torch.Generator().manual_seed(0)
    z = torch.cat(
        [
            sample_latent(CALIBRATION_BATCH_SIZE, cfg.model, cpu, noise)
            for _ in range(CALIBRATION_BATCHES)
        ]
    )
    layers = list(gan.ema.net)
    before_norm = torch.nn.Sequential(*layers[: layers.index(first_norm)])
    with torch.no_grad():
        expected = before_norm(z).mean(dim=0)
    torch.testing.assert_close(first_norm.running_mean, expected, rtol=1e-4, atol=1e-5)


def test_eval_of_an_mnist_run_takes_another_data_root(tmp_path: Path, tiny_mnist: Path) -> None:
    from gantool.app.cli import main

    run = tmp_path / "run"
    train(compose_config(mnist_overrides(tiny_mnist, "trainer.eval_at_end=false")), run)
    moved = tmp_path / "moved"
    tiny_mnist.rename(moved)
    main(["eval", str(run), "--device", "cpu", "--data-root", str(moved)])
    written = json.loads((run / "eval.json").read_text())
    assert written["eval"]["eval/num_samples"] == 32 and written["objective"]["name"] == "eval/fld"
    assert written["eval"]["eval/fld_noise"] > written["eval"]["eval/fld_real_floor"]
