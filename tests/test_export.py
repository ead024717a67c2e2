"""`gantool export`: generators as ONNX and torch.export files, read back in a process that
never imports gantool (ONNX Runtime and torch.export.load) and compared with `gantool sample`
for the same latents; and the refusals, each one line that writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import FAST, compose_config, digest, mnist_overrides, run_main, write_tiny_mnist
from gantool.app.job import train
from gantool.app.sample import Latents
from gantool.nn.mlp import split_classes
from gantool.training.trained import load_generator

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

NUM, SEED = 6, 7  # the samples compared, and `gantool sample --seed`
# Two steps, a checkpoint at the end and nothing else: no evaluation, log rows or pictures.
SHORT = [
    *FAST,
    "trainer.steps=2",
    "trainer.eval_at_end=false",
    "trainer.log_every=100",
    "trainer.sample_every=100",
]
TINY_CONDITIONAL_DCGAN = [
    "model=dcgan",
    "model.g.channels=[8,4]",
    "model.d.channels=[4,8]",
    "model.latent_dim=8",
    "model.conditional=true",
]
# What each case's files give for NUM latents.
SHAPES = {
    "gaussian": (NUM,),
    "conditional dcgan mnist": (NUM, 1, 28, 28),
    "standardised vectors": (NUM, 2),
}

# Runs in a fresh interpreter: each case's files through ONNX Runtime and torch.export.load,
# on the whole batch and on its first row alone (the batch dimension is dynamic); the record
# inside each file must be the one beside it. Never imports gantool.
OUTSIDE = """
import json, sys
import numpy as np, torch

def onnx_runner(path, beside):
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["gantool"] == beside
    names = [i.name for i in session.get_inputs()]
    return lambda *xs: session.run(None, dict(zip(names, xs)))[0]

def pt2_runner(path, beside):
    extra = {"gantool.json": ""}
    program = torch.export.load(path, extra_files=extra).module()
    assert extra["gantool.json"] == beside
    def run(*xs):
        with torch.no_grad():
            return program(*(torch.from_numpy(x) for x in xs)).numpy()
    return run

for case in json.loads(sys.argv[1]):
    inputs = [np.load(p) for p in case["inputs"]]
    for fmt, path in case["files"].items():
        run = (onnx_runner if fmt == "onnx" else pt2_runner)(path, open(path + ".json").read())
        np.save(case["out"] + f".{fmt}.all.npy", run(*inputs))
        np.save(case["out"] + f".{fmt}.one.npy", run(*(x[:1] for x in inputs)))
assert "gantool" not in sys.modules, "the check imported gantool"
print("ok")
"""


def export_case(run: Path, out: Path, formats: tuple[str, ...]) -> dict:
    """Export `run` in `formats`, write `gantool sample`'s samples for NUM latents of SEED,
    and the latents that command draws (its own Latents), as the files' inputs."""
    out.mkdir()
    files = {fmt: str(out / f"g.{fmt}") for fmt in formats}
    for fmt, path in files.items():
        assert run_main("export", run, "--format", fmt, "--out", path) == 0
    assert run_main("sample", run, "--num", NUM, "--seed", SEED, "--out", out / "sample.npy") == 0
    trained = load_generator(run, "cpu")
    z = Latents(trained, NUM, SEED, None, None).draw()  # what the sample command fed G
    inputs = list(split_classes(z)) if trained.config.model.conditional else [z]
    paths = [str(out / f"input{i}.npy") for i in range(len(inputs))]
    for path, x in zip(paths, inputs, strict=True):
        np.save(path, x.numpy())
    return {"files": files, "inputs": paths, "out": str(out / "got")}


def run_cases(
    tmp_path: Path, gaussian_run: Path, formats: dict[str, tuple[str, ...]]
) -> dict[str, dict]:
    """Train each case's tiny run (the Gaussian's: conftest's finished run), export it in its
    formats, and run the files outside gantool on the latents `gantool sample` draws; the
    cases, their files read back."""
    root = write_tiny_mnist(tmp_path / "data")
    # Two features (a small picture at the run's end), far from G's mean 0 and std 1.
    rows = np.random.default_rng(0).normal([10.0, 300.0], [1.0, 20.0], (64, 2))
    np.save(tmp_path / "rows.npy", rows.astype(np.float32))
    overrides = {
        "conditional dcgan mnist": mnist_overrides(root, *TINY_CONDITIONAL_DCGAN, *SHORT),
        "standardised vectors": [
            "dataset=vectors",
            f"dataset.path={tmp_path / 'rows.npy'}",
            "dataset.standardize=true",
            "model.g.hidden=[16]",
            "model.d.hidden=[16]",
            "trainer.batch_size=16",
            *SHORT,
        ],
    }
    cases = {}
    for name, fmts in formats.items():
        run = gaussian_run if name == "gaussian" else tmp_path / f"run_{name.replace(' ', '_')}"
        if name != "gaussian":
            train(compose_config(overrides[name]), run)
        cases[name] = export_case(run, tmp_path / f"export_{name.replace(' ', '_')}", fmts)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", OUTSIDE, json.dumps(list(cases.values()))],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    return cases


def check_against_sample(name: str, case: dict) -> None:
    """Each file's samples are `gantool sample`'s for the same latents, in the promised
    shape, for the whole batch and for one row."""
    folder = Path(case["out"]).parent
    reference = np.load(folder / "sample.npy")  # MNIST's file: (N, 28, 28)
    shape = SHAPES[name]
    for fmt in case["files"]:
        record = json.loads((folder / f"g.{fmt}.json").read_text())
        assert record["output"]["shape"] == ["batch", *shape[1:]] and record["format"] == fmt
        got = np.load(f"{case['out']}.{fmt}.all.npy")
        one = np.load(f"{case['out']}.{fmt}.one.npy")
        assert got.shape == shape and got.dtype == np.float32, (name, fmt, got.shape, got.dtype)
        np.testing.assert_allclose(got.reshape(reference.shape), reference, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(one, got[:1], rtol=1e-5, atol=1e-5)


def test_exports_match_gantool_sample_outside_gantool(tmp_path: Path, finished_run: Path) -> None:
    """Each case in the format it adds most to, to stay within a few seconds (ONNX: images
    with a class input, and the float64 de-standardisation; .pt2: the EMA Gaussian, values
    (B,)); the slow test below runs every case in both."""
    formats = {
        "gaussian": ("pt2",),
        "conditional dcgan mnist": ("onnx",),
        "standardised vectors": ("onnx",),
    }
    cases = run_cases(tmp_path, finished_run, formats)
    for name, case in cases.items():
        check_against_sample(name, case)

    mnist = json.loads((tmp_path / "export_conditional_dcgan_mnist" / "g.onnx.json").read_text())
    assert mnist["classes"] == [str(d) for d in range(10)] and mnist["conditional"]
    assert [i["name"] for i in mnist["inputs"]] == ["latent", "classes"]
    graph = onnx.load(cases["conditional dcgan mnist"]["files"]["onnx"]).graph
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input]
    assert dims == [["batch", 8], ["batch"]]  # the record's name for the dynamic dimension
    images = np.load(f"{cases['conditional dcgan mnist']['out']}.onnx.all.npy")
    assert images.min() >= 0 and images.max() <= 1
    # De-standardised: the second feature's samples are near its mean 300, not G's 0.
    vectors = np.load(f"{cases['standardised vectors']['out']}.onnx.all.npy")
    assert abs(vectors[:, 1].mean() - 300) < 100, vectors[:, 1]
    gaussian = json.loads((tmp_path / "export_gaussian" / "g.pt2.json").read_text())
    assert (gaussian["noise"], gaussian["latent_dim"], gaussian["step"]) == ("normal", 16, 6)
    assert gaussian["ema"] and gaussian["classes"] is None
    assert gaussian["run"] == str(finished_run) and gaussian["inputs"][0]["shape"] == ["batch", 16]


@pytest.mark.slow
def test_every_case_in_both_formats(tmp_path: Path, finished_run: Path) -> None:
    cases = run_cases(tmp_path, finished_run, dict.fromkeys(SHAPES, ("onnx", "pt2")))
    for name, case in cases.items():
        check_against_sample(name, case)


def test_refusals_are_one_line_and_write_nothing(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (tmp_path / "taken.onnx").mkdir()
    before = digest(tmp_path)
    refusals = {
        ("--format", "tflite", "--out", tmp_path / "g.onnx"): "invalid choice: 'tflite'",
        ("--format", "onnx", "--out", tmp_path / "taken.onnx"): "is a folder",
        ("--format", "onnx", "--out", tmp_path / "g.pt2"): ".onnx for --format onnx",
    }
    for args, message in refusals.items():
        assert run_main("export", run, *args) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    missing = tmp_path / "no_such_run"
    assert run_main("export", missing, "--format", "pt2", "--out", tmp_path / "g.pt2") == 1
    err = capsys.readouterr().err.strip()
    assert "no such checkpoint file or run folder" in err and len(err.splitlines()) == 1, err
    assert run_main("export", run, "--format", "pt2", "--out", tmp_path / "g.pt2") == 1
    assert "no checkpoint in" in capsys.readouterr().err
    assert run_main("export", run, "--best", "--format", "pt2", "--out", tmp_path / "g.pt2") == 1
    assert "has no best checkpoint" in capsys.readouterr().err
    assert digest(tmp_path) == before and not missing.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "taken.onnx"]


def test_an_export_never_goes_into_a_runs_checkpoints(finished_run: Path, capsys) -> None:
    before = digest(finished_run)
    for name in ("g.pt2", "step_0000006.pt2"):
        out = finished_run / "checkpoints" / name
        assert run_main("export", finished_run, "--format", "pt2", "--out", out) == 2
        err = capsys.readouterr().err.strip()
        assert "never go over a checkpoint or into checkpoints/" in err, err
    assert digest(finished_run) == before


def test_a_missing_extra_names_it(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    assert run_main("export", tmp_path, "--format", "onnx", "--out", tmp_path / "g.onnx") == 1
    err = capsys.readouterr().err.strip()
    assert "pip install 'gantool[export]'" in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []
