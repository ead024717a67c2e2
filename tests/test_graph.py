"""trainer.cuda_graph: the graph-safe step gives the eager step's numbers, the switch falls back
to the eager step where it must, and resume stays exact.

Without a GPU the graph-safe step runs uncaptured (static batch buffers, gradients zeroed in
place, autocast without its cache, the EMA update inside the step): these tests pin it to the
eager step bit for bit. The tests marked `cuda` capture it and need a GPU.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import pytest
import torch

from conftest import CUDA, FAST, compose_config, equal_state, mnist_overrides
from gantool.app.bench import bench_graph
from gantool.app.job import train
from gantool.core.errors import ConfigError
from gantool.core.files import MetricsLog
from gantool.datasets.registry import family, training_stream
from gantool.nn.optim import IMPLEMENTATION_KEYS, build_optimizer
from gantool.runtime.rng import seed_everything
from gantool.training import graph
from gantool.training.checkpointer import latest_checkpoint
from gantool.training.codec import load as load_checkpoint
from gantool.training.gan import GAN
from gantool.training.step import GANStep, StepSettings

CPU = torch.device("cpu")
cuda = pytest.mark.skipif(not CUDA, reason="captures a CUDA graph: needs a GPU")

# Setups whose step differs in what a graph must hold. "MNIST" marks those on the tiny MNIST.
CASES = {
    "gaussian default (reuse_fake, EMA)": [],
    "seed_gaussian (20 D and G steps, moments D, SGD)": [
        "experiment=seed_gaussian",
        "trainer.batch_size=50",
    ],
    "R1 on a BatchNorm D with dropout": [
        "loss.r1_gamma=2.0",
        "model.d.batch_norm=true",
        "model.d.dropout=0.2",
    ],
    "bf16 autocast": ["device.precision=bf16", "trainer.batch_size=64"],
    "keras_mnist (BatchNorm) with EMA": [
        "MNIST",
        "experiment=keras_mnist",
        "trainer.ema_decay=0.5",
    ],
    "mnist with dropout and SGD": ["MNIST", "model.d.dropout=0.3", "optimizer=sgd"],
    "hinge loss, spectral norm": ["loss=hinge", "model.d.spectral_norm=true"],
    "wgan_gp, 2 critic steps, packs of 2": [
        "loss=wgan_gp",
        "trainer.d_steps=2",
        "model.d.pack=2",
    ],
    "conditional cgan_mnist (lsgan, G first, dropout)": [
        "MNIST",
        "experiment=cgan_mnist",
        "trainer.epochs=null",
        "trainer.batch_size=16",
    ],
}


def overrides(case: str, tiny_mnist: Path, *extra: str) -> list[str]:
    given = CASES[case]
    if given[:1] == ["MNIST"]:
        return mnist_overrides(tiny_mnist, *given[1:], *extra)
    return [*FAST, *given, *extra]


def fresh(args: list[str], device: torch.device = CPU):
    """A seeded start: the config, the GAN and its data stream."""
    cfg = compose_config(args)
    seed_everything(cfg.trainer.seed)
    data = training_stream(cfg, device)
    gan = GAN.build(cfg.model, cfg.optimizer, cfg.trainer.ema_decay, (data.data_dim,), device)
    return cfg, gan, data


def eager_run(args: list[str], num: int, device: torch.device = CPU):
    """STAT_KEYS of `num` eager steps (num, 6), and the GAN after them."""
    cfg, gan, data = fresh(args, device)
    step = GANStep(gan, StepSettings.of(cfg), device)
    stats = [step(data) for _ in range(num)]
    return torch.stack(stats), gan


def graph_run(args: list[str], num: int, device: torch.device = CPU):
    """The same through GraphStep: captured on CUDA, the graph-safe step run eagerly on CPU."""
    cfg, gan, data = fresh(args, device)
    step = graph.GraphStep(cfg, gan, data, StepSettings.of(cfg), device)
    stats = [step.step().clone() for _ in range(num)]  # clone: a replay rewrites its output
    return torch.stack(stats), gan, step


def assert_close_gan(a: dict, b: dict, **tolerance) -> None:
    """Two GAN state dicts hold the same tensors to float tolerance (or `tolerance`), and the
    optimizers the same settings but how they run (a captured step's Adam is capturable)."""
    assert a.keys() == b.keys()
    for part in a:
        if part.endswith("optimizer"):
            settings = [
                [
                    {k: v for k, v in group.items() if k not in IMPLEMENTATION_KEYS}
                    for group in groups
                ]
                for groups in (a[part]["param_groups"], b[part]["param_groups"])
            ]
            assert settings[0] == settings[1], part
            torch.testing.assert_close(a[part]["state"], b[part]["state"], msg=part, **tolerance)
        else:
            torch.testing.assert_close(a[part], b[part], msg=part, **tolerance)


@pytest.mark.parametrize("case", CASES)
def test_the_graph_safe_step_is_the_eager_step_bit_for_bit(case: str, tiny_mnist: Path) -> None:
    args = overrides(case, tiny_mnist)
    eager_stats, eager_gan = eager_run(args, 4)
    graph_stats, graph_gan, step = graph_run(args, 4)
    assert step.graph is None  # nothing is captured on CPU
    if "device.precision=bf16" in args:
        # Autocast without its weight cache sums the gradients of D's two passes in float32,
        # not bfloat16 (see train_step): D's gradients differ by bfloat16's rounding (2**-8),
        # and so, from the second step on, do the statistics of D's outputs.
        torch.testing.assert_close(graph_stats, eager_stats, rtol=1e-2, atol=1e-4)
        assert_close_gan(eager_gan.state_dict(), graph_gan.state_dict(), rtol=1e-2, atol=1e-4)
        return
    assert torch.equal(eager_stats, graph_stats)
    assert equal_state(eager_gan.state_dict(), graph_gan.state_dict())  # weights, EMA, Adam


def test_static_batches_hand_out_the_streams_batches_in_order() -> None:
    cfg = compose_config([*FAST, "trainer.batch_size=8"])
    stream = family(cfg.dataset).stream(cfg.dataset, 8, 0, CPU)
    same = family(cfg.dataset).stream(cfg.dataset, 8, 0, CPU)
    batches = graph.StaticBatches(stream, 3)
    for _ in range(2):
        batches.fill()
        buffers = [b.data_ptr() for b in batches.buffers]
        for buffer in buffers:
            batch = batches.next_batch()
            assert batch.data_ptr() == buffer  # the buffer's memory, read where the graph reads
            assert torch.equal(batch, same.next_batch())
        assert [b.data_ptr() for b in batches.buffers] == buffers  # the same buffers each step


def test_a_failed_capture_falls_back_to_the_eager_step(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One warning line, then the eager step: the run's numbers do not change."""
    args = [*FAST, "trainer.batch_size=64"]
    eager_stats, eager_gan = eager_run(args, graph.WARMUP_STEPS + 3)
    cfg, gan, data = fresh(args)
    step = graph.GraphStep(cfg, gan, data, StepSettings.of(cfg), CPU)
    step.stream = "a side stream"  # as on CUDA: warm up, then capture

    def failing_capture(fn, stream):
        gan.discriminator.requires_grad_(False)  # as if it failed during G's update
        raise RuntimeError("operation not permitted when stream is capturing\nmore")

    monkeypatch.setattr(graph, "warming_up", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(graph, "capture", failing_capture)
    with caplog.at_level(logging.INFO, logger="gantool.training.graph"):
        stats = torch.stack([step.step().clone() for _ in range(graph.WARMUP_STEPS + 3)])
    assert step.failed and step.stream is None
    assert caplog.messages == [
        "CUDA graph capture of the training step failed (operation not permitted when stream "
        "is capturing); training with the eager step"
    ]
    assert torch.equal(stats, eager_stats)
    assert equal_state(eager_gan.state_dict(), gan.state_dict())


TRAIN_CASES = [
    "gaussian default (reuse_fake, EMA)",
    "seed_gaussian (20 D and G steps, moments D, SGD)",
    "keras_mnist (BatchNorm) with EMA",
]
# On CPU the BatchNorm case is slow-only (13 s of the default suite's 2-core budget): its step
# is checked bit for bit above, and its eager resume in test_train.py. On CUDA it always runs.
CPU_TRAIN_CASES = [*TRAIN_CASES[:2], pytest.param(TRAIN_CASES[2], marks=pytest.mark.slow)]


@pytest.fixture
def graph_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the trainer choose the graph step on CPU, where it runs uncaptured."""
    monkeypatch.setattr(graph, "reason_not", lambda *args: None)


def checkpoint_state(run_dir: Path):
    return load_checkpoint(latest_checkpoint(run_dir))


@pytest.mark.parametrize("case", CPU_TRAIN_CASES)
def test_the_trainer_on_the_graph_path_trains_as_the_eager_one(
    case: str, tmp_path: Path, tiny_mnist: Path, graph_on_cpu: None
) -> None:
    args = overrides(case, tiny_mnist, "trainer.steps=7")
    train(compose_config([*args, "trainer.cuda_graph=false"]), tmp_path / "eager")
    train(compose_config(args), tmp_path / "graph")
    a, b = checkpoint_state(tmp_path / "eager"), checkpoint_state(tmp_path / "graph")
    assert equal_state(a.gan, b.gan) and equal_state(a.rng, b.rng)
    rows = [MetricsLog(tmp_path / d / "metrics.jsonl").rows() for d in ("eager", "graph")]
    assert rows[0] == rows[1]


@pytest.mark.parametrize("case", CPU_TRAIN_CASES)
def test_resume_on_the_graph_path_is_exact(
    case: str, tmp_path: Path, tiny_mnist: Path, graph_on_cpu: None
) -> None:
    args = overrides(case, tiny_mnist)
    full, split = tmp_path / "full", tmp_path / "split"
    train(compose_config([*args, "trainer.steps=7"]), full)
    train(compose_config([*args, "trainer.steps=3"]), split)
    train(compose_config([*args, "trainer.steps=7"]), split)  # a new GraphStep: warms up again
    a, b = checkpoint_state(full), checkpoint_state(split)
    assert a.step == b.step == 7
    for key in ("gan", "rng", "stream"):
        assert equal_state(getattr(a, key), getattr(b, key)), key
    assert MetricsLog(full / "metrics.jsonl").rows() == MetricsLog(split / "metrics.jsonl").rows()


def test_a_cpu_run_keeps_the_eager_step(caplog: pytest.LogCaptureFixture) -> None:
    """auto says nothing on CPU; true says in one line why it trains eagerly; false is silent."""
    said = {}
    for value in ("auto", "true", "false"):
        cfg, gan, data = fresh([*FAST, f"trainer.cuda_graph={value}"])
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="gantool.training.graph"):
            assert graph.plan(cfg, gan, data, StepSettings.of(cfg), CPU) is None
        said[value] = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert said["auto"] == said["false"] == []
    assert said["true"] == [
        (
            logging.WARNING,
            "trainer.cuda_graph=True: the device is cpu, and CUDA graphs need a CUDA device; "
            "training with the eager step",
        )
    ]


def test_auto_keeps_a_small_uncaptured_model_off_the_gpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """device=auto on a GPU: the CPU for the Gaussian's small model when its step would run
    eagerly (cuda_graph=false, or lazy R1), the GPU when it is captured or the model is large."""
    from gantool.training import loop as trainer

    gpu = torch.device("cuda")
    monkeypatch.setattr(trainer, "resolve_device", lambda name: gpu if name == "auto" else CPU)
    monkeypatch.setattr(graph, "reason_not", lambda device, world, lazy=False: None)
    with caplog.at_level(logging.INFO, logger="gantool.runtime.device"):
        eager = trainer.training_device(compose_config(["trainer.cuda_graph=false"]))
    assert eager == CPU
    assert "training on the CPU rather than cuda: a model of" in caplog.text
    assert trainer.training_device(compose_config([])) == gpu  # captured: kept
    big = ["trainer.cuda_graph=false", "model.g.hidden=[400,400]", "model.d.hidden=[400,400]"]
    assert trainer.training_device(compose_config(big)) == gpu
    assert trainer.training_device(compose_config(["device=cpu"])) == CPU


def test_reasons_not_to_capture() -> None:
    assert graph.reason_not(torch.device("cuda"), 1) is None
    assert "CUDA device" in graph.reason_not(torch.device("mps"), 1)
    assert "2 processes" in graph.reason_not(torch.device("cuda"), 2)
    assert "lazy R1" in graph.reason_not(torch.device("cuda"), 1, r1_lazy=True)


def test_cuda_graph_takes_auto_true_or_false() -> None:
    for value, expected in (("auto", "auto"), ("true", True), ("false", False)):
        assert compose_config([*FAST, f"trainer.cuda_graph={value}"]).trainer.cuda_graph == expected
    with pytest.raises(ConfigError, match=re.escape("trainer.cuda_graph='yes' is not a choice")):
        compose_config([*FAST, "trainer.cuda_graph=yes"])


def test_an_optimizer_keeps_its_own_implementation_when_loading() -> None:
    """A checkpoint of a captured run says capturable=True; a CPU run loads it and stays as
    it was built (torch refuses capturable Adam on CPU unless fused, which ignores it)."""
    cfg = compose_config(FAST).optimizer.g
    net = torch.nn.Linear(3, 2)
    saved = build_optimizer(net.parameters(), cfg)
    net(torch.randn(4, 3)).sum().backward()
    saved.step()
    state = saved.state_dict()
    for group in state["param_groups"]:
        group["capturable"], group["fused"] = True, None
    loaded = build_optimizer(net.parameters(), cfg)
    loaded.load_state_dict(state)
    assert all(g["capturable"] is False and g["fused"] is True for g in loaded.param_groups)
    assert all(s["step"].device == CPU for s in loaded.state.values())
    loaded.step()  # runs as built
    assert build_optimizer(net.parameters(), cfg, capturable=True).defaults["capturable"] is False


def test_bench_graph_times_the_three_loops_on_cpu() -> None:
    cfg = compose_config([*FAST, "model.d.batch_norm=true", "trainer.ema_decay=0.9"])
    rows = bench_graph(cfg, batch_sizes=(16,), num_steps=3, warmup=4)
    (row,) = rows
    assert row["batch_size"] == 16 and row["captured"] is False
    for key in ("eager_images_per_s", "graph_images_per_s", "ceiling_images_per_s"):
        assert row[key] > 0


# --- on a GPU ----------------------------------------------------------------------------------
NUM_STEPS = graph.WARMUP_STEPS + 4  # eager warm-up, the capture, then replays


@cuda
@pytest.mark.parametrize("case", CASES)
def test_the_captured_step_gives_the_eager_steps_losses(case: str, tiny_mnist: Path) -> None:
    args = overrides(case, tiny_mnist, "device=cuda")
    eager_stats, eager_gan = eager_run(args, NUM_STEPS, torch.device("cuda"))
    graph_stats, graph_gan, step = graph_run(args, NUM_STEPS, torch.device("cuda"))
    assert step.graph is not None and not step.failed
    # Replays run the eager step's kernels on the eager step's random numbers; float
    # tolerance, in case the libraries pick other kernels on the capture stream.
    bf16 = {"rtol": 1e-2, "atol": 1e-4} if "device.precision=bf16" in args else {}
    torch.testing.assert_close(graph_stats, eager_stats, **bf16)
    assert_close_gan(eager_gan.state_dict(), graph_gan.state_dict(), **bf16)


@cuda
@pytest.mark.parametrize("case", TRAIN_CASES)
def test_resume_with_the_captured_step_continues_where_it_stopped(
    case: str, tmp_path: Path, tiny_mnist: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = NUM_STEPS
    args = overrides(case, tiny_mnist, "device=cuda", "trainer.cuda_graph=true")
    full, split = tmp_path / "full", tmp_path / "split"
    with caplog.at_level(logging.INFO, logger="gantool.training.graph"):
        train(compose_config([*args, f"trainer.steps={2 * n}"]), full)
    assert "captured as one CUDA graph" in caplog.text and "failed" not in caplog.text
    train(compose_config([*args, f"trainer.steps={n}"]), split)
    train(compose_config([*args, f"trainer.steps={2 * n}"]), split)  # captures afresh
    a, b = checkpoint_state(full), checkpoint_state(split)
    assert a.step == b.step == 2 * n
    assert_close_gan(a.gan, b.gan)
    assert equal_state(a.stream, b.stream)


@cuda
def test_capturable_adam_state_is_on_the_gpu_after_loading_an_eager_checkpoint() -> None:
    cfg = compose_config(FAST).optimizer.g
    net = torch.nn.Linear(3, 2).cuda()
    eager = build_optimizer(net.parameters(), cfg)
    net(torch.randn(4, 3, device="cuda")).sum().backward()
    eager.step()
    captured = build_optimizer(net.parameters(), cfg, capturable=True)
    captured.load_state_dict(eager.state_dict())  # capturable=False in the file
    assert all(g["capturable"] for g in captured.param_groups)
    assert all(s["step"].is_cuda for s in captured.state.values())
