"""`gantool sample` and `gantool eval` as a user meets them: formats, bad arguments, foreign
checkpoints, loose checkpoints, relative data roots, and the pictures themselves.

Commands run in-process through gantool.cli.main on two tiny runs trained once per module.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FAST, compose_config, mnist_overrides, one_error_line, write_tiny_mnist
from gantool.app import evaluate as evaluate_module
from gantool.app import sample as sampling
from gantool.app.cli import main
from gantool.app.job import train
from gantool.config.datasets import GaussianConfig
from gantool.core import files as outputs
from gantool.plots import samples as plots
from gantool.training.checkpointer import latest_checkpoint
from gantool.training.codec import load as load_checkpoint

QUICK = ["trainer.eval_at_end=false", "device.num_threads=1"]


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("gaussian") / "run"
    train(compose_config([*FAST, "trainer.eval_at_end=false"]), run)
    return run


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mnist")
    run = folder / "run"
    train(compose_config(mnist_overrides(write_tiny_mnist(folder / "data"), *QUICK)), run)
    return run


def gantool(*args: str) -> int:
    """Run `gantool ARGS` in this process; its exit code."""
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return e.code
    return 0


def files(*roots: Path) -> dict[Path, bytes]:
    """Every file under the roots (hidden ones too), with its bytes: to see that nothing moved."""
    return {p: p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


def folders(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_dir())


def wrote(capsys) -> list[str]:
    out = capsys.readouterr().out
    return [line.split()[1] for line in out.splitlines() if line.startswith("Wrote ")]


# --- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["s.png", "s.pdf", "s.svg", "s.npy", "s.pt", "s.csv", "S.PNG"])
def test_gaussian_out_extension_picks_the_format(gaussian_run, tmp_path, capsys, name) -> None:
    out = tmp_path / "new" / name
    assert gantool("sample", gaussian_run, "--out", out, "--num", 500, "--device", "cpu") == 0
    assert wrote(capsys) == [str(out)]
    assert [p.name for p in (tmp_path / "new").iterdir()] == [name]  # that file and no other
    data = out.read_bytes()
    suffix = out.suffix.lower()
    if suffix == ".png":
        assert data.startswith(b"\x89PNG") and Image.open(out).size == (600, 400)
    elif suffix == ".pdf":
        assert data.startswith(b"%PDF")
    elif suffix == ".svg":
        assert b"<svg" in data[:1000]
    elif suffix == ".npy":
        values = np.load(out)
        assert values.shape == (500,) and values.dtype == np.float32
    elif suffix == ".pt":
        values = torch.load(out, weights_only=True)
        assert values.shape == (500,) and values.dtype == torch.float32
    else:
        lines = out.read_text().splitlines()
        assert lines[0] == "x" and len(lines) == 501
        float(lines[1])


def test_raw_formats_hold_the_same_samples(gaussian_run, tmp_path) -> None:
    for name in ("a.npy", "a.pt", "a.csv"):
        assert gantool("sample", gaussian_run, "--out", tmp_path / name, "--seed", 7) == 0
    npy = np.load(tmp_path / "a.npy")
    assert npy.shape == (10_000,)  # the Gaussian default: enough for a smooth histogram
    assert np.array_equal(npy, torch.load(tmp_path / "a.pt", weights_only=True).numpy())
    csv = np.loadtxt(tmp_path / "a.csv", skiprows=1, dtype=np.float32)
    assert np.array_equal(npy, csv)  # nine digits keep float32 exactly


def test_mnist_formats(mnist_run, tmp_path, capsys) -> None:
    assert gantool("sample", mnist_run, "--out", tmp_path / "d.npy") == 0
    images = np.load(tmp_path / "d.npy")
    assert images.shape == (64, 28, 28) and images.dtype == np.float32  # the 8x8 grid's 64
    assert images.min() >= 0 and images.max() <= 1
    assert gantool("sample", mnist_run, "--out", tmp_path / "d.pt", "--num", 5) == 0
    assert torch.load(tmp_path / "d.pt", weights_only=True).shape == (5, 28, 28)
    assert gantool("sample", mnist_run, "--out", tmp_path / "d.png") == 0
    assert Image.open(tmp_path / "d.png").size[0] >= 480
    capsys.readouterr()
    before = files(tmp_path)
    for name in ("d.csv", "d.svg", "d.pdf"):
        assert gantool("sample", mnist_run, "--out", tmp_path / name) == 2
        assert "MNIST samples are written as .png, .npy, .pt" in one_error_line(capsys)
    assert files(tmp_path) == before


def test_without_out_the_picture_goes_to_the_runs_samples(gaussian_run, capsys) -> None:
    expected = gaussian_run / "samples" / "sample_step_0000006.png"
    assert gantool("sample", gaussian_run) == 0
    assert wrote(capsys) == [str(expected)]
    assert Image.open(expected).size == (600, 400)
    expected.unlink()  # the run's samples/ stays as training left it for the other tests


# --- refusals: one line, the right exit code, nothing written ------------------------------------


BAD_ARGUMENTS = [  # for sample and eval alike
    (["--out", "{tmp}"], "is a folder: give a file name, such as"),
    (["--num", "10000000000"], "--num 10000000000: must be from 1 to 10,000,000"),
    (["--num", str(2**70)], "must be from 1 to 10,000,000"),
    (["--num", "0"], "must be from 1 to 10,000,000"),
    (["--num", "ten"], "argument --num: invalid int value: 'ten'"),
    (["--seed", str(2**64)], f"--seed {2**64}: must be from 0 to 2^64-1"),
    (["--seed", "-1"], "--seed -1: must be from 0 to 2^64-1"),
    (["--device", "junk"], "argument --device: invalid choice: 'junk'"),
]
BAD_SAMPLE_OUT = [
    (["--out", "{tmp}/gnoext"], "the extension picks the format; accepted: .png, .npy, .pt"),
    (["--out", "{tmp}/g."], "the extension picks the format"),
    (["--out", "{tmp}/g.jpg"], "the extension picks the format"),
    (["--out", "{run}/checkpoints/s.pt"], "never go over a checkpoint or into checkpoints/"),
]
CASES = [("sample", *case) for case in BAD_ARGUMENTS + BAD_SAMPLE_OUT] + [
    ("eval", *case) for case in BAD_ARGUMENTS
]


@pytest.mark.parametrize(("command", "args", "message"), CASES, ids=lambda v: str(v)[:40])
def test_bad_arguments_are_one_line_and_exit_2(
    gaussian_run, tmp_path, capsys, command, args, message
) -> None:
    args = [a.format(tmp=tmp_path, run=gaussian_run) for a in args]
    device = [] if "--device" in args else ["--device", "cpu"]
    before = files(tmp_path, gaussian_run)
    assert gantool(command, gaussian_run, *args, *device) == 2
    assert message in one_error_line(capsys)
    assert files(tmp_path, gaussian_run) == before


def test_unwritable_out_is_one_line_and_exit_1(gaussian_run, tmp_path, capsys) -> None:
    (tmp_path / "afile").write_text("not a folder")
    before = files(tmp_path, gaussian_run)
    for out, message in (
        (tmp_path / "afile" / "x.png", "afile is a file, not a folder"),
        (tmp_path / "afile" / "deeper" / "x.png", "afile is a file, not a folder"),
        (Path("/proc/gantool-test/x.png"), "cannot write /proc/gantool-test/x.png"),
    ):
        for command, name in (("sample", out), ("eval", out.with_suffix(".json"))):
            assert gantool(command, gaussian_run, "--out", name, "--num", 100) == 1
            assert message.replace(".png", name.suffix) in one_error_line(capsys)
    assert files(tmp_path, gaussian_run) == before
    assert not Path("/proc/gantool-test").exists()


def test_a_failed_write_leaves_no_file_and_no_folder(gaussian_run, tmp_path, capsys, monkeypatch):
    def full_disk(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "atomic_write", full_disk)
    out = tmp_path / "made" / "for" / "it.png"
    assert gantool("sample", gaussian_run, "--out", out) == 1
    assert f"cannot write {out}: the disk is full" in one_error_line(capsys)
    assert folders(tmp_path) == []


def test_out_of_memory_is_one_line(gaussian_run, tmp_path, capsys, monkeypatch) -> None:
    def allocation_fails(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9TB")

    monkeypatch.setattr("gantool.app.sample.generate", allocation_fails)
    assert gantool("sample", gaussian_run, "--out", tmp_path / "x.png", "--num", 100) == 1
    assert "out of memory drawing 100 samples: try a smaller --num" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_the_per_dataset_bounds(mnist_run, tmp_path, capsys) -> None:
    assert gantool("sample", mnist_run, "--num", 10_001, "--out", tmp_path / "g.png") == 2
    assert "--num 10001: must be from 1 to 10,000 for MNIST samples as .png" in one_error_line(
        capsys
    )
    assert gantool("sample", mnist_run, "--num", 100_001, "--out", tmp_path / "g.npy") == 2
    assert "to 100,000 for MNIST samples as .npy" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


# --- what counts as a checkpoint -----------------------------------------------------------------


class _Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def _foreign(kind: str, path: Path) -> Path:
    if kind == "tensor":
        torch.save(torch.ones(3), path)
    elif kind == "dict":
        torch.save({"weights": torch.ones(3)}, path)
    else:
        path.write_bytes(pickle.dumps(_Payload()))
    return path


@pytest.mark.parametrize("kind", ["tensor", "dict", "pickle"])
@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_foreign_file_is_not_a_checkpoint(tmp_path, capsys, kind, command) -> None:
    path = _foreign(kind, tmp_path / "model.pt")
    before = files(tmp_path)
    assert gantool(command, path, "--device", "cpu") == 1
    line = one_error_line(capsys)
    assert f"{path} is not a gantool checkpoint" in line and "weights_only" not in line
    assert files(tmp_path) == before


def test_sample_and_eval_skip_a_foreign_newest_checkpoint(gaussian_run, tmp_path, capsys, caplog):
    run = tmp_path / "run"
    shutil.copytree(gaussian_run, run)
    (run / "samples" / "sample_step_0000006.png").unlink(missing_ok=True)
    _foreign("tensor", run / "checkpoints" / "step_0000009.pt")
    _foreign("dict", run / "checkpoints" / "step_0000012.pt")
    before = files(run / "checkpoints")
    assert gantool("sample", run, "--out", tmp_path / "s.npy") == 0
    assert "step_0000006.pt, step 6" in capsys.readouterr().out
    assert "step_0000012.pt is not a gantool checkpoint: it lacks step" in caplog.text
    assert gantool("eval", run, "--num", 100, "--out", tmp_path / "e.json") == 0
    assert json.loads((tmp_path / "e.json").read_text())["step"] == 6
    assert files(run / "checkpoints") == before  # read only: nothing renamed


def test_resume_falls_back_past_a_foreign_newest_checkpoint(tmp_path, caplog) -> None:
    run = tmp_path / "run"
    train(compose_config([*FAST, "trainer.eval_at_end=false"]), run)
    foreign = _foreign("dict", run / "checkpoints" / "step_0000007.pt")
    train(compose_config([*FAST, "trainer.steps=9", "trainer.eval_at_end=false"]), run)
    assert f"{foreign} is not a gantool checkpoint: it lacks step" in caplog.text
    assert (foreign.parent / (foreign.name + ".corrupt")).exists()
    assert load_checkpoint(latest_checkpoint(run)).step == 9


# --- where outputs go ----------------------------------------------------------------------------


def test_a_loose_checkpoint_writes_beside_itself(gaussian_run, tmp_path, capsys) -> None:
    loose = tmp_path / "some" / "dir" / "model.pt"
    loose.parent.mkdir(parents=True)
    shutil.copy(latest_checkpoint(gaussian_run), loose)
    unrelated = tmp_path / "some" / "eval.json"
    unrelated.write_text('{"mine": true}\n')
    assert gantool("eval", loose, "--num", 200) == 0
    assert wrote(capsys) == [str(loose.with_name("model.eval.json"))]
    assert json.loads(loose.with_name("model.eval.json").read_text())["step"] == 6
    assert gantool("sample", loose) == 0
    assert wrote(capsys) == [str(loose.with_name("model.sample_step_0000006.png"))]
    assert unrelated.read_text() == '{"mine": true}\n'
    assert sorted(p.name for p in (tmp_path / "some").iterdir()) == ["dir", "eval.json"]
    assert gantool("sample", loose, "--out", loose) == 2  # never over the checkpoint itself
    assert "never go over a checkpoint" in one_error_line(capsys)


def test_eval_out(gaussian_run, tmp_path, capsys) -> None:
    out = tmp_path / "made" / "scores.json"
    assert gantool("eval", gaussian_run, "--num", 200, "--out", out) == 0
    assert wrote(capsys) == [str(out)]
    written = json.loads(out.read_text())
    assert written["step"] == 6 and written["eval"]["eval/num_samples"] == 200
    assert not (gaussian_run / "eval.json").exists()
    for bad in ("scores.txt", "scores"):
        assert gantool("eval", gaussian_run, "--out", tmp_path / bad) == 2
        assert "the extension picks the format; accepted: .json" in one_error_line(capsys)
    assert gantool("eval", gaussian_run, "--out", tmp_path) == 2
    assert "is a folder: give a file name, such as" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["made", "scores.json"]


# --- MNIST data of a run started elsewhere -------------------------------------------------------


@pytest.fixture
def relative_mnist_run(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """An MNIST run started in tmp/start with dataset.root=data (relative), and an unrelated
    folder tmp/elsewhere as the current folder."""
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    write_tiny_mnist(start / "data")
    elsewhere.mkdir()
    monkeypatch.chdir(start)
    overrides = [o for o in mnist_overrides(Path("data"), *QUICK) if o != "dataset.download=false"]
    train(compose_config([*overrides, "dataset.download=true"]), start / "run")
    monkeypatch.chdir(elsewhere)
    return start, elsewhere


def scored_roots(monkeypatch) -> list[str]:
    """Replace the scoring itself (the LeNet is not what these tests are about) and record the
    dataset.root it was handed."""
    roots: list[str] = []

    def fake_evaluate(cfg, generator, device, num, seed):
        roots.append(cfg.dataset.root)
        assert cfg.dataset.download is False
        return {"eval/num_samples": num}

    monkeypatch.setattr(evaluate_module, "evaluate", fake_evaluate)
    return roots


def no_download(monkeypatch) -> None:
    def download(cfg):
        raise AssertionError("eval must never download")

    monkeypatch.setattr("gantool.app.download._download", download)


def test_eval_reads_a_relative_root_from_where_the_run_started(
    relative_mnist_run, monkeypatch, capsys
) -> None:
    start, elsewhere = relative_mnist_run
    roots = scored_roots(monkeypatch)
    no_download(monkeypatch)
    assert gantool("eval", start / "run", "--num", 10) == 0
    assert roots == [str(start / "data")]
    assert list(elsewhere.iterdir()) == []

    # The files gone: one line naming where they were looked for and --data-root; no download.
    (start / "data").rename(start / "moved")
    capsys.readouterr()
    before = files(start)
    assert gantool("eval", start / "run", "--num", 10) == 1
    line = one_error_line(capsys)
    assert f"MNIST test split not found in {start / 'data' / 'MNIST' / 'raw'}" in line
    assert f"(the run's dataset.root=data, from {start} where the run was started)" in line
    assert "pass --data-root ROOT, the folder that holds MNIST/raw" in line
    assert files(start) == before and list(elsewhere.iterdir()) == []
    assert gantool("eval", start / "run", "--num", 10, "--data-root", "../start/moved") == 0
    assert roots[-1] == str(start / "moved")  # relative to the current folder
    (start / "moved").rename(start / "data")

    # An older checkpoint has no "started_in": Hydra's record of the working folder stands in.
    ckpt = latest_checkpoint(start / "run")
    state = torch.load(ckpt, weights_only=True)
    state.pop("started_in", None)
    torch.save(state, ckpt)
    hydra = start / "run" / ".hydra"
    hydra.mkdir(exist_ok=True)
    (hydra / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    cwd: {start}\n")
    assert gantool("eval", start / "run", "--num", 10) == 0
    assert roots[-1] == str(start / "data")

    # With neither, the current folder, which holds no MNIST here.
    (hydra / "hydra.yaml").unlink()
    capsys.readouterr()
    before = files(start)
    assert gantool("eval", start / "run", "--num", 10) == 1
    line = one_error_line(capsys)
    assert f"not found in {elsewhere / 'data' / 'MNIST' / 'raw'}" in line
    assert "from the current folder: the run did not record where it started" in line
    assert files(start) == before and list(elsewhere.iterdir()) == []


# --- the pictures --------------------------------------------------------------------------------


def test_training_grids_are_large_and_titled(mnist_run) -> None:
    grid = Image.open(mnist_run / "samples" / "step_0000006.png").convert("L")
    width, height = grid.size
    assert width >= 480 and height > width  # the title band sits above the square grid
    band = np.asarray(grid)[: plots.TITLE_BAND]
    assert band.min() < 128  # dark pixels: the title's letters


def test_digit_grid_scales_by_whole_pixels() -> None:
    images = np.zeros((4, 28, 28), np.float32)
    images[:, 10, 10] = 1.0  # one white pixel in each black digit
    picture = np.asarray(Image.open(io.BytesIO(plots.digit_grid(images))).convert("L"))
    scale = 8  # a 2x2 grid is 62 pixels wide: 8x makes it 496
    assert picture.shape == (plots.TITLE_BAND + 62 * scale, 62 * scale)
    grid = picture[plots.TITLE_BAND :]
    top, left = (2 + 10) * scale, (2 + 10) * scale
    assert (grid[top : top + scale, left : left + scale] == 255).all()  # a whole block, no blur
    assert (grid[top + scale : top + 2 * scale, left : left + scale] == 0).all()


def test_histograms_of_a_run_share_their_axes() -> None:
    target = GaussianConfig(mean=4.0, std=1.25)
    rng = np.random.default_rng(0)
    peak = 1 / (1.25 * np.sqrt(2 * np.pi))
    frames = [rng.normal(4 + shift, std, 10_000) for shift, std in ((0.3, 1.1), (0, 1.2), (0, 1.3))]
    for frame in frames:  # one x-range and one y-limit for all three
        lo, hi, top = plots.histogram_axes(frame, target.mean, target.std)
        assert (lo, hi) == (4 - 5.0, 4 + 5.0) and top == pytest.approx(1.6 * peak)
    narrow = plots.histogram_axes(rng.normal(4, 0.3, 10_000), 4.0, 1.25)
    assert narrow[2] == pytest.approx(1.6 * peak * 4)  # doubled as often as needed: twice
    wide = plots.histogram_axes(rng.normal(4, 3, 10_000), 4.0, 1.25)
    assert wide[:2] == (4 - 10.0, 4 + 10.0) and wide[2] == pytest.approx(1.6 * peak)
    sizes = {
        Image.open(io.BytesIO(sampling.picture(torch.tensor(f)[:, None], target, ".png"))).size
        for f in frames
    }
    assert sizes == {(600, 400)}


def test_bad_arguments_are_refused_before_torch_is_imported() -> None:
    code = (
        "import sys; from gantool.app.cli import main\n"
        "try: main(['sample', 'run', '--num', '0'])\n"
        "except SystemExit as e: assert e.code == 2\n"
        "assert 'torch' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "error: gantool sample: --num 0: must be from 1 to 10,000,000"


# --- conditional generators: --label ------------------------------------------------------------
@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cgan")
    root = write_tiny_mnist(folder / "data")
    shrunk = ["experiment=cgan_mnist", "trainer.epochs=null", "trainer.batch_size=16", *QUICK]
    run = folder / "run"
    train(compose_config(mnist_overrides(root, *shrunk)), run)
    return run


def test_label_draws_the_asked_class(cgan_run, tmp_path, capsys) -> None:
    for label in (3, 4):
        out = tmp_path / f"{label}.npy"
        assert gantool("sample", cgan_run, "--label", label, "--num", 9, "--out", out) == 0
    threes, fours = np.load(tmp_path / "3.npy"), np.load(tmp_path / "4.npy")
    assert threes.shape == fours.shape == (9, 28, 28)
    assert not np.allclose(threes, fours)  # the same noise: only the class differs
    capsys.readouterr()
    assert gantool("sample", cgan_run, "--label", 3) == 0  # a picture named for its class
    (picture,) = wrote(capsys)
    assert Path(picture).parent == cgan_run / "samples"
    assert Path(picture).name.endswith("_label_3.png")


def test_a_bad_label_is_one_line_and_writes_nothing(cgan_run, gaussian_run, tmp_path, capsys):
    before = files(tmp_path, cgan_run, gaussian_run)
    assert gantool("sample", cgan_run, "--label", 10, "--out", tmp_path / "x.npy") == 2
    assert "--label 10: this generator draws classes 0 to 9" in one_error_line(capsys)
    assert gantool("sample", gaussian_run, "--label", 1) == 2
    assert "this generator is not conditional" in one_error_line(capsys)
    assert files(tmp_path, cgan_run, gaussian_run) == before
