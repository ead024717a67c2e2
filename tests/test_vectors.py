"""The user's own vectors (`dataset=vectors`): reading .npy and .csv files, one line per bad
file, the record and standardisation, the stream, the metrics' known answers, pictures, and
short runs that train, resume exactly, sample, evaluate (from another folder too) and sweep."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FAST, compose_config, equal_state, run_cli
from gantool.app.cli import main
from gantool.app.evaluate import evaluate_checkpoint
from gantool.app.job import train
from gantool.app.sample import sample_checkpoint
from gantool.config.compose import to_dict
from gantool.core.errors import ConfigError, GantoolError
from gantool.core.files import MetricsLog
from gantool.datasets.registry import family, to_config
from gantool.datasets.vectors import VECTORS, VectorsStream, read_table, to_units
from gantool.nn.metrics import frechet_distance, ks_per_feature, wasserstein1_per_feature
from gantool.nn.mlp import generate, sample_latent
from gantool.plots.samples import vectors_picture
from gantool.training.checkpointer import latest_checkpoint
from gantool.training.codec import load as load_checkpoint
from gantool.training.trained import load_generator

CPU = torch.device("cpu")
NAMES = ["height", "weight", "temperature"]
# Shrunk to seconds: batches of 32 from 200 rows, 6 to an epoch.
SMALL = [
    "dataset=vectors",
    *FAST,
    "device.num_threads=1",
    "model.g.hidden=[16]",
    "model.d.hidden=[16]",
    "trainer.batch_size=32",
    "trainer.num_samples=100",
    "trainer.num_eval_samples=100",
]
EVAL_KEYS = {
    "eval/num_samples",
    *(f"eval/{k}" for k in ("fd", "ks_mean", "ks_max", "w1_mean", "precision", "recall")),
    *(f"eval/{k}_real_floor" for k in ("fd", "ks_mean", "ks_max", "w1_mean")),
    "eval/precision_real",
    "eval/recall_real",
    "eval/ks_per_feature",
    "eval/w1_per_feature",
}


def correlated(num: int = 200, seed: int = 0) -> np.ndarray:
    """num rows of 3 correlated features, far from mean 0 and std 1."""
    rng = np.random.default_rng(seed)
    std = np.array([1.0, 1.5, 20.0])
    corr = np.array([[1.0, 0.8, -0.4], [0.8, 1.0, -0.2], [-0.4, -0.2, 1.0]])
    return rng.multivariate_normal([10.0, -5.0, 300.0], corr * np.outer(std, std), size=num)


def write_csv(path: Path, data: np.ndarray, header: list[str] | None = NAMES) -> Path:
    lines = [",".join(header)] if header else []
    lines += [",".join(repr(float(v)) for v in row) for row in data]
    path.write_text("\n".join(lines) + "\n")
    return path


def vectors(path: Path, *extra: str):
    return compose_config([*SMALL, f"dataset.path={path}", *extra])


@pytest.fixture
def data_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "data.csv", correlated())


# --- reading files ------------------------------------------------------------------------------
def test_npy_and_csv_with_and_without_header_hold_the_same_numbers(tmp_path: Path) -> None:
    data = correlated()
    np.save(tmp_path / "d.npy", data)
    tables = {
        "npy": read_table(tmp_path / "d.npy"),
        "csv": read_table(write_csv(tmp_path / "h.csv", data)),
        "bare": read_table(write_csv(tmp_path / "b.csv", data, header=None)),
    }
    for table in tables.values():
        assert np.array_equal(table.data, data)
    assert tables["csv"].features == tuple(NAMES)
    assert tables["npy"].features == tables["bare"].features == ("x1", "x2", "x3")
    digests = {
        compose_config([*SMALL, f"dataset.path={p}"]).dataset.digest for p in tmp_path.iterdir()
    }
    assert len(digests) == 1  # the digest is of the numbers, not of the file


def test_csv_tolerates_spaces_quotes_blank_lines_and_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "loose.csv"
    path.write_text('\ufeff"a", b\n\n 1.5 , "2"\n3,4e0\n\n', encoding="utf-8")
    table = read_table(path)
    assert table.features == ("a", "b")
    assert table.data.tolist() == [[1.5, 2.0], [3.0, 4.0]]
    one = read_table(write_csv(tmp_path / "one.csv", np.arange(5.0)[:, None], header=["x"]))
    assert one.data.shape == (5, 1)
    np.save(tmp_path / "flat.npy", np.arange(4, dtype=np.int32))  # (N,): one feature
    assert read_table(tmp_path / "flat.npy").data.shape == (4, 1)


BAD_FILES = {
    "missing.csv": (None, "missing.csv: no such file (a relative path starts in the current"),
    "words.csv": ("a,b\n1,2\n3,oops\n", "words.csv: line 3, column 2: 'oops' is not a number"),
    "nan.csv": ("a,b\n1,2\n3,nan\n", "nan.csv: line 3, column 2 is nan: every value must be a"),
    "inf.csv": ("1,2\n-inf,2\n", "inf.csv: line 2, column 1 is -inf: every value must be a"),
    "hole.csv": ("1,2\n3,\n", "hole.csv: line 2, column 2 is empty"),
    "ragged.csv": ("x,y,z\n1,2,3\n4,5\n", "ragged.csv: line 3 has 2 values, line 1 has 3"),
    "mixed.csv": ("a,2\n1,2\n", "mixed.csv: line 1 mixes names and numbers"),
    "one.csv": ("a,b\n1,2\n", "one.csv holds one row of numbers: a GAN needs at least 2"),
    "header.csv": ("a,b\n", "header.csv holds no rows of numbers: a GAN needs at least 2"),
    "empty.csv": ("", "empty.csv: the file is empty"),
    "latin1.csv": ("é,b\n1,2\n".encode("latin-1"), "latin1.csv: not a text file"),
    "nan.npy": (np.array([[1.0, 2.0], [np.nan, 0.0]]), "nan.npy: row 2, feature 1 is nan"),
    "one.npy": (np.ones((1, 3)), "one.npy holds one row of numbers"),
    "cube.npy": (np.ones((4, 2, 2)), "cube.npy: holds an array of shape (4, 2, 2)"),
    "words.npy": (np.array([["a", "b"], ["c", "d"]]), "words.npy: holds <U1 values"),
    "text.npy": ("1,2\n3,4\n", "text.npy: not a .npy file"),
    "data.txt": ("1,2\n3,4\n", "data.txt: expected a .npy or .csv file"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_each_bad_file_is_one_line(name: str, tmp_path: Path, monkeypatch) -> None:
    content, message = BAD_FILES[name]
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GantoolError) as failed:
        compose_config([*SMALL, f"dataset.path={name}"])
    assert str(failed.value).startswith(message), str(failed.value)
    assert "\n" not in str(failed.value)


def test_gantool_train_refuses_a_bad_file_and_writes_nothing(tmp_path: Path, capsys, monkeypatch):
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["train", "dataset=vectors", "dataset.path=ragged.csv"])
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: ragged.csv: line 2 has 1 values, line 1 has 2: every row needs the same "
        "number of comma-separated values"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ragged.csv"]  # no outputs/


def test_a_path_is_required_and_the_record_is_not_for_users(data_csv: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.path"):
        compose_config(["dataset=vectors"])
    with pytest.raises(ConfigError, match=r"recorded from dataset\.path when a run starts"):
        vectors(data_csv, "dataset.features=[a,b,c]")


# --- the record and standardisation -------------------------------------------------------------
def test_the_record_is_read_at_start_and_kept_without_the_file(data_csv: Path) -> None:
    cfg = vectors(data_csv)
    ds = cfg.dataset
    data = correlated()
    assert ds.features == NAMES and family(ds).data_dim(ds) == 3
    assert np.allclose(ds.mean, data.mean(axis=0)) and np.allclose(ds.std, data.std(axis=0))
    assert len(ds.digest) == 16
    data_csv.unlink()  # a checkpoint's config is whole: it needs no file
    again = to_config(to_dict(cfg)).dataset
    assert again == ds


def test_standardisation_round_trip(data_csv: Path) -> None:
    data = correlated()
    ds = vectors(data_csv).dataset
    stream = VectorsStream(ds, 32, seed=0, device=CPU)
    rows = stream.rows.double()  # (200, 3): what D sees as real
    assert torch.allclose(rows.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(rows.std(0, correction=0), torch.ones(3, dtype=torch.float64), atol=1e-5)
    back = VECTORS.values(stream.rows, ds)  # G's space -> the data's units, as files hold them
    assert back.dtype == torch.float32 and back.shape == (200, 3)
    assert np.allclose(back.numpy(), data, rtol=1e-5, atol=1e-4)

    raw = VectorsStream(dataclasses.replace(ds, standardize=False), 32, seed=0, device=CPU)
    assert np.allclose(raw.rows.numpy(), data.astype(np.float32))
    assert torch.equal(
        to_units(raw.rows, dataclasses.replace(ds, standardize=False)).float(), raw.rows
    )


def test_a_constant_feature_is_kept_as_it_is(tmp_path: Path) -> None:
    data = np.stack([np.linspace(0, 1, 50), np.full(50, 7.0)], axis=1)
    ds = vectors(write_csv(tmp_path / "c.csv", data, ["x", "seven"])).dataset
    assert ds.std[1] == 0.0
    stream = VectorsStream(ds, 10, seed=0, device=CPU)
    assert torch.equal(stream.rows[:, 1], torch.zeros(50))
    assert torch.allclose(
        to_units(stream.rows, ds)[:, 1], torch.full((50,), 7.0, dtype=torch.float64)
    )


def test_the_stream_covers_each_epoch_and_restores_its_order(data_csv: Path) -> None:
    ds = vectors(data_csv).dataset
    stream = VectorsStream(ds, 32, seed=5, device=CPU)
    assert stream.batches_per_epoch == 6 and stream.data_dim == 3
    epoch = torch.cat([stream.next_batch() for _ in range(6)])  # 192 of 200 rows, none twice
    assert len(torch.unique(epoch, dim=0)) == 192
    state = stream.state_dict()
    ahead = [stream.next_batch() for _ in range(8)]  # across the epoch boundary
    again = VectorsStream(ds, 32, seed=99, device=CPU)
    again.load_state_dict(state)
    assert all(torch.equal(a, again.next_batch()) for a in ahead)


def test_a_batch_larger_than_the_file_is_one_line(data_csv: Path) -> None:
    with pytest.raises(GantoolError, match=r"trainer.batch_size=256 is larger than .*200 rows"):
        train(vectors(data_csv, "trainer.batch_size=256"), data_csv.parent / "run")


# --- metrics: known answers ------------------------------------------------------------------
def test_identical_sets_are_at_distance_zero() -> None:
    a = torch.from_numpy(correlated(500))
    assert ks_per_feature(a, a).tolist() == [0.0, 0.0, 0.0]
    assert wasserstein1_per_feature(a, a).tolist() == [0.0, 0.0, 0.0]
    assert frechet_distance(a, a) < 1e-6


def test_a_shifted_set_has_known_w1_ks_and_fd() -> None:
    a = torch.from_numpy(correlated(500))
    shift = torch.tensor([0.5, -2.0, 1000.0], dtype=torch.float64)  # the last beyond the range
    b = a + shift
    assert torch.allclose(wasserstein1_per_feature(a, b), shift.abs())
    ks = ks_per_feature(a, b)
    assert 0 < ks[0] < 1 and ks[2] == 1.0
    # Same covariance: FD is the squared distance between the means.
    assert frechet_distance(a, b) == pytest.approx(float(shift.pow(2).sum()), rel=1e-9)


def test_two_sample_ks_and_w1_of_small_sets_by_hand() -> None:
    # F_a jumps by 1/2 at 0 and at 1; F_b by 1 at 0.5: |F_a - F_b| = 1/2 on [0, 1).
    a, b = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.5]])
    assert ks_per_feature(a, b).item() == 0.5
    assert wasserstein1_per_feature(a, b).item() == 0.5
    # Unequal sizes: {0, 0, 3} against {1}: W1 = 2/3 * 1 + 1/3 * 2.
    a, b = torch.tensor([[0.0], [0.0], [3.0]]), torch.tensor([[1.0]])
    assert wasserstein1_per_feature(a, b).item() == pytest.approx(4 / 3)
    assert ks_per_feature(a, b).item() == pytest.approx(2 / 3)


def test_two_samples_of_one_distribution_are_close_up_to_sampling() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(20_000, 2, generator=gen), torch.randn(20_000, 2, generator=gen)
    # KS between two samples of 20,000: about 1.36 * sqrt(2 / 20,000) = 0.0136 at the 5% level.
    assert ks_per_feature(a, b).max() < 0.02
    assert wasserstein1_per_feature(a, b).max() < 0.03
    assert frechet_distance(a, b) < 1e-3


# --- pictures -----------------------------------------------------------------------------------
@pytest.mark.parametrize("num_features", [1, 7])  # one panel; a pairs plot and more
def test_pictures_with_and_without_the_data(num_features: int) -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(5, 2, (300, num_features))
    names = [f"f{i}" for i in range(num_features)]
    mean, scale = real.mean(0), real.std(0)
    with_data = vectors_picture(real[:100] + 1, real, names, mean, scale, "step 3")
    without = vectors_picture(
        real[:100], None, names, mean, scale, "step 3", "png", "data not drawn"
    )
    width, height = Image.open(io.BytesIO(with_data)).size
    assert Image.open(io.BytesIO(without)).size == (width, height)
    assert width >= 500 and height >= 500
    if num_features == 1:
        svg = vectors_picture(real[:100], real, names, mean, scale, "x", "svg")
        assert svg.lstrip().startswith(b"<?xml")


# --- runs -----------------------------------------------------------------------------------------
def test_a_run_resumes_exactly_where_it_stopped(data_csv: Path) -> None:
    folder = data_csv.parent
    full, split = folder / "full", folder / "split"
    quick = ["trainer.eval_at_end=false", "trainer.sample_every=100"]
    train(vectors(data_csv, *quick, "trainer.steps=8"), full)  # 8 batches: into the 2nd epoch
    train(vectors(data_csv, *quick, "trainer.steps=3"), split)  # stops between log rows
    assert train(vectors(data_csv, *quick, "trainer.steps=8"), split)["step"] == 8
    a, b = (load_checkpoint(latest_checkpoint(d)) for d in (full, split))
    assert a.stream["epoch"] == 1 and a.step == b.step == 8
    for part in a.gan:
        assert equal_state(a.gan[part], b.gan[part]), part
    assert equal_state(a.rng, b.rng) and equal_state(a.stream, b.stream)
    assert MetricsLog(full / "metrics.jsonl").rows() == MetricsLog(split / "metrics.jsonl").rows()


def test_resume_refuses_a_file_whose_numbers_changed(data_csv: Path) -> None:
    run = data_csv.parent / "run"
    train(vectors(data_csv, "trainer.steps=3"), run)
    write_csv(data_csv, correlated() * 1.01)
    with pytest.raises(GantoolError, match=r"cannot resume .* dataset\.digest \("):
        train(vectors(data_csv, "trainer.steps=6"), run)


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run started in START with dataset.path=data.csv, a relative path; its folder START/run."""
    start = tmp_path_factory.mktemp("start")
    write_csv(start / "data.csv", correlated())
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(start)
        train(compose_config([*SMALL, "dataset.path=data.csv"]), start / "run")
    return start


def test_a_run_fills_its_folder_and_scores_in_the_datas_terms(started: Path) -> None:
    run = started / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["eval"]) == EVAL_KEYS
    assert summary["eval"]["eval/num_samples"] == 100  # min(num_eval_samples, half the rows)
    assert summary["objective"] == {"name": "eval/fd", "value": summary["eval"]["eval/fd"]}
    assert all(0 <= summary["eval"][k] <= 1 for k in ("eval/ks_mean", "eval/precision"))
    assert len(summary["eval"]["eval/ks_per_feature"]) == 3
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["losses.png", "moments.png"]
    assert Image.open(run / "samples" / "step_0000006.png").size[0] >= 500


def test_samples_come_back_in_the_datas_units(started: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # elsewhere: samples need the run's record, not the file
    run = started / "run"
    trained = load_generator(run, "cpu")
    z = sample_latent(50, trained.config.model, CPU, torch.Generator(CPU).manual_seed(4))
    ds = trained.config.dataset
    expected = generate(trained.generator, z) * torch.tensor(ds.std) + torch.tensor(ds.mean)

    _, npy = sample_checkpoint(run, 50, tmp_path / "s.npy", seed=4, device_name="cpu")
    values = np.load(npy)
    assert values.dtype == np.float32 and values.shape == (50, 3)
    assert np.allclose(values, expected.numpy(), rtol=1e-5, atol=1e-3)
    _, pt = sample_checkpoint(run, 50, tmp_path / "s.pt", seed=4, device_name="cpu")
    assert torch.equal(torch.load(pt, weights_only=True), torch.from_numpy(values))
    _, csv = sample_checkpoint(run, 50, tmp_path / "s.csv", seed=4, device_name="cpu")
    lines = csv.read_text().splitlines()
    assert lines[0] == ",".join(NAMES) and len(lines) == 51
    assert np.allclose(np.loadtxt(lines[1:], delimiter=","), values, rtol=1e-6)
    _, png = sample_checkpoint(run, None, tmp_path / "s.png", seed=4, device_name="cpu")
    assert Image.open(png).size[0] >= 500  # drawn without the data, which is not here


def test_eval_from_another_folder_and_with_data_root(started: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = started / "run"
    summary = json.loads((run / "summary.json").read_text())
    _, results, _ = evaluate_checkpoint(run, None, 0, "cpu", out=tmp_path / "e.json")
    assert results == summary["eval"]  # seed 0 and the run's data, as at the end of training

    (started / "data.csv").rename(started / "moved.csv")
    try:
        with pytest.raises(GantoolError) as failed:
            evaluate_checkpoint(run, None, 0, "cpu", out=tmp_path / "e.json")
        assert str(failed.value) == (
            f"{started / 'data.csv'} not found (the run's dataset.path=data.csv, from {started} "
            "where the run was started): pass --data-root DIR, the folder that holds it"
        )
        (tmp_path / "copy").mkdir()
        (started / "moved.csv").rename(tmp_path / "copy" / "data.csv")
        _, again, _ = evaluate_checkpoint(run, None, 0, "cpu", "copy", out=tmp_path / "e.json")
        assert again == results
    finally:
        for where in (started / "moved.csv", tmp_path / "copy" / "data.csv"):
            if where.exists():
                where.rename(started / "data.csv")


@pytest.mark.slow  # the mixture's and test_cli's sweeps run in the default suite
def test_a_two_job_sweep_through_the_cli(data_csv: Path) -> None:
    folder = data_csv.parent
    done = run_cli("train", "-m", *SMALL, "dataset.path=data.csv", "trainer.seed=0,1", cwd=folder)
    assert done.returncode == 0, done.stderr
    jobs = sorted(p.parent for p in (folder / "outputs" / "multirun").rglob("summary.json"))
    assert len(jobs) == 2
    values = [json.loads((j / "summary.json").read_text())["objective"] for j in jobs]
    assert all(v["name"] == "eval/fd" and math.isfinite(v["value"]) for v in values)
