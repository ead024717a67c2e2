"""`gantool bench`: its FLOP count is what torch executes, and a shrunk bench runs through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import compose_config
from gantool.app.bench import ROUNDS, BenchOptions, figure, print_bench, run_bench, step_flops
from gantool.datasets.registry import family
from gantool.training.gan import GAN
from gantool.training.step import GANStep, StepSettings

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "extra",
    [[], ["trainer.reuse_fake=true"], ["trainer.d_steps=2", "trainer.g_steps=3"]],
)
def test_analytic_flops_equal_the_executed_matmuls(tiny_mnist: Path, extra: list[str]) -> None:
    cfg = compose_config(
        [
            "experiment=seed_mnist",
            f"dataset.root={tiny_mnist}",
            "dataset.split=test",
            "trainer.batch_size=8",
            "device=cpu",
            *extra,
        ]
    )
    data = family(cfg.dataset).stream(cfg.dataset, cfg.trainer.batch_size, 0, CPU)
    gan = GAN.build(cfg.model, cfg.optimizer, cfg.trainer.ema_decay, (data.data_dim,), CPU)
    with FlopCounterMode(display=False) as counter:
        GANStep(gan, StepSettings.of(cfg), CPU)(data)
    assert step_flops(cfg, gan) == counter.get_total_flops()


def test_a_shrunk_bench_writes_its_figures(tmp_path: Path, capsys) -> None:
    opts = BenchOptions(
        out=tmp_path / "bench",
        device="cpu",
        mnist_root=str(tmp_path / "no-mnist-here"),
        steps=2,
        warmup=1,
        batch_sizes=(16,),
        gaussian_seeds=0,
        startup=False,
        dcgan_steps=0,  # its row: test_the_dcgan_row_races_the_textbook_loop (slow)
    )
    results = run_bench(opts, report=lambda line: None)
    assert "dcgan" not in results
    assert json.loads((tmp_path / "bench" / "bench.json").read_text()) == results
    assert results["mnist_data"].startswith("random images")
    assert results["matmul_fp32_flops_per_s"]["median"] > 1e8
    plain, reused = results["mnist"]
    assert (plain["reuse_fake"], reused["reuse_fake"]) == (False, True)
    assert reused["flops_per_step"] < plain["flops_per_step"]
    for row in results["mnist"]:
        assert len(row["images_per_s"]["rounds"]) == ROUNDS
        assert row["images_per_s"]["median"] > 0 and 0 < row["mfu"]["median"] < 1
        assert row["speedup_vs_textbook"]["low"] > 0
    print_bench(results)
    assert "× textbook" in capsys.readouterr().out


def test_a_figure_is_its_rounds_median_and_says_when_they_disagree(capsys) -> None:
    """MFU above 100% came from one matmul rate measured at the start, divided into the best of
    three training rounds measured at other moments of a shared machine: each round is now
    divided by its own rate, and a figure whose rounds spread is marked not to quote."""
    steady = figure([100.0, 104.0, 98.0, 101.0, 99.0])
    assert steady["median"] == 100.0 and (steady["low"], steady["high"]) == (98.0, 104.0)
    assert steady["quotable"]
    shaky = figure([100.0, 60.0, 98.0, 101.0, 99.0])
    assert shaky["median"] == 99.0 and not shaky["quotable"]
    row = {"batch_size": 64, "reuse_fake": False, "flops_per_step": 1e6}
    row |= {k: steady for k in ("images_per_s", "mfu", "speedup_vs_textbook")}
    results = {
        "machine": {"device": "cpu", "device_name": "x", "torch_threads": 2},
        "mnist_data": "random images",
        "matmul_fp32_flops_per_s": steady,
        "mnist": [{**row, "textbook_images_per_s": shaky}],
    }
    print_bench(results)
    out = " ".join(capsys.readouterr().out.split())
    assert "the rounds of batch 64 spread more than 20%" in out and "Do not quote them" in out


@pytest.mark.slow
def test_the_dcgan_row_races_the_textbook_loop(tmp_path: Path, capsys) -> None:
    """DCGAN's row: gantool's step and pytorch/examples' loop on the same nets, in turn."""
    opts = BenchOptions(out=tmp_path, device="cpu", mnist_root=str(tmp_path), dcgan_steps=5)
    from gantool.app.bench import dcgan_row, mnist_root

    root, _ = mnist_root(opts.mnist_root, tmp_path / "random")
    row = dcgan_row(root, opts, torch.device("cpu"), report=print)
    assert len(row["images_per_s"]["rounds"]) == ROUNDS
    assert row["images_per_s"]["median"] > 0 and row["textbook_images_per_s"]["median"] > 0
    assert "DCGAN 28 px batch 64" in capsys.readouterr().out
