"""`gantool bench`: its FLOP count is what torch executes, and a shrunk bench runs through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import compose_config
from gantool.app.bench import BenchOptions, print_bench, run_bench, step_flops
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
    gan = GAN.build(cfg.model, cfg.optimizer, cfg.trainer.ema_decay, data.data_dim, CPU)
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
    )
    results = run_bench(opts, report=lambda line: None)
    assert json.loads((tmp_path / "bench" / "bench.json").read_text()) == results
    assert results["mnist_data"].startswith("random images")
    assert results["matmul_fp32_flops_per_s"] > 1e8
    plain, reused = results["mnist"]
    assert (plain["reuse_fake"], reused["reuse_fake"]) == (False, True)
    assert reused["flops_per_step"] < plain["flops_per_step"]
    for row in results["mnist"]:
        assert row["images_per_s"] > 0 and 0 < row["mfu"] < 1
        assert row["speedup_vs_textbook"] > 0
    print_bench(results)
    assert "× textbook" in capsys.readouterr().out
