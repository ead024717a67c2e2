"""dataset=images: the user's folders of pictures, decoded once and cached, with DCGAN's nets.

The same pixels must give the same run as the MNIST files they came from; every bad folder is
one line and nothing written; the record in the config makes resume refuse a changed folder.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import (
    FAST,
    STAND_IN,
    compose_config,
    digest,
    equal_state,
    mnist_overrides,
    run_main,
    write_tiny_mnist,
)
from gantool.app.job import train
from gantool.core.errors import ConfigError, GantoolError
from gantool.datasets import images as images_module
from gantool.datasets.images import decode_file, metric_key
from gantool.datasets.mnist import read_split
from gantool.training.checkpointer import latest_checkpoint
from gantool.training.codec import load as load_checkpoint

# A DCGAN small enough for seconds on CPU: 28 px, widths 8 and 4.
TINY_DCGAN = ["model.g.channels=[8,4]", "model.d.channels=[4,8]", "model.latent_dim=8"]


def write_png_folder(images: np.ndarray, folder: Path, labels=None, names=None) -> Path:
    """uint8 images (N, H, W) or (N, H, W, 3) as PNG files; by label into subfolders."""
    for i, image in enumerate(images):
        sub = folder / (names[labels[i]] if labels is not None else "")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(sub / f"{i:05d}.png")
    return folder


def images_overrides(folder: Path, *extra: str) -> list[str]:
    return [
        "dataset=images",
        f"dataset.path={folder}",
        "dataset.resolution=28",
        *FAST,
        "trainer.batch_size=16",
        *extra,
    ]


@pytest.fixture
def digits(tmp_path: Path) -> tuple[Path, Path]:
    """The tiny MNIST files, and the same 64 images as PNG files in one folder."""
    root = write_tiny_mnist(tmp_path / "data")
    images, _ = read_split(root, "test")
    return root, write_png_folder(images.numpy(), tmp_path / "pngs")


def test_the_same_pixels_train_the_same_weights_as_mnist(digits, tmp_path: Path) -> None:
    """dataset=images on PNG files of the MNIST images, with MNIST's model, optimizer, trainer
    and loss, trains the same G and D bit for bit: same rows in the same order, same steps."""
    root, folder = digits
    same = ["model=mnist", "optimizer=mnist", "trainer=mnist", "loss=mnist", "trainer.steps=4"]
    same += ["trainer.objective=null", "trainer.eval_at_end=false"]
    from_idx = train(compose_config(mnist_overrides(root, *same)), tmp_path / "idx")
    from_png = train(compose_config(images_overrides(folder, *same)), tmp_path / "png")
    assert from_idx["step"] == from_png["step"] == 4
    a = load_checkpoint(latest_checkpoint(tmp_path / "idx"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "png"))
    assert equal_state(a.gan, b.gan)
    assert equal_state(a.fixed_noise, b.fixed_noise)


def test_decoding_is_cached_and_resume_refuses_changed_pixels(
    digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, folder = digits
    cfg = compose_config(images_overrides(folder, *TINY_DCGAN))
    assert (cfg.dataset.channels, cfg.dataset.num_images, cfg.dataset.classes) == (1, 64, [])
    assert len(list(Path(os.environ["GANTOOL_CACHE_DIR"]).glob("images-*.pt"))) >= 1

    # A second process finds the cache: nothing is decoded.
    images_module._decoded.clear()
    monkeypatch.setattr(images_module, "decode", lambda *a: pytest.fail("decoded again"))
    again = compose_config(images_overrides(folder, *TINY_DCGAN))
    assert again.dataset.digest == cfg.dataset.digest
    monkeypatch.undo()

    run = tmp_path / "run"
    train(cfg, run)
    image = np.array(Image.open(folder / "00003.png"))
    image[0, 0] ^= 0xFF
    Image.fromarray(image).save(folder / "00003.png")
    longer = compose_config(images_overrides(folder, *TINY_DCGAN, "trainer.steps=8"))
    longer.dataset = cfg.dataset  # the run's record, as resume reads it from the checkpoint
    with pytest.raises(GantoolError, match="not the ones this run started with"):
        train(longer, run)


def test_class_subfolders_label_the_images_for_a_conditional_dcgan(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 255, (24, 28, 28, 3), dtype=np.uint8)
    labels = [i % 2 for i in range(24)]
    folder = write_png_folder(pictures, tmp_path / "pets", labels, ["cat", "dog"])
    cfg = compose_config(images_overrides(folder, *TINY_DCGAN, "model.conditional=true"))
    assert cfg.dataset.classes == ["cat", "dog"] and cfg.dataset.channels == 3
    assert cfg.model.num_classes == 2  # filled in from the folder
    summary = train(cfg, tmp_path / "run")
    assert summary["step"] == 6
    assert "eval/swd" in summary["eval"] and summary["eval"]["eval/class_names"] == ["cat", "dog"]


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def test_unusual_encodings_decode_to_the_pixels_they_show(tmp_path: Path) -> None:
    """16-bit PNGs, alpha, palettes, CMYK JPEGs and BMPs come out as 8-bit RGB."""
    rgb = np.random.default_rng(1).integers(0, 255, (6, 5, 3), dtype=np.uint8)
    grey16 = (rgb[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    cases = {
        "grey16.png": (Image.fromarray(grey16), "PNG", np.repeat(rgb[..., :1], 3, 2)),
        "alpha.png": (Image.fromarray(np.dstack([rgb, rgb[..., :1]])), "PNG", rgb),
        "palette.png": (Image.fromarray(rgb).convert("P"), "PNG", None),
        "cmyk.jpg": (Image.fromarray(rgb).convert("CMYK"), "JPEG", None),
        "plain.bmp": (Image.fromarray(rgb), "BMP", rgb),
    }
    for name, (image, fmt, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(_encoded(image, fmt))
        decoded = decode_file(path)
        assert decoded.dtype == torch.uint8 and decoded.shape == (3, 6, 5), name
        if expected is not None:
            assert torch.equal(decoded, torch.from_numpy(expected).permute(2, 0, 1)), name
        if name == "palette.png":  # the palette's colours, not its indices
            want = np.array(image.convert("RGB"))
            assert torch.equal(decoded, torch.from_numpy(want).permute(2, 0, 1))


def _bad_folders(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = np.zeros((28, 28), np.uint8)
    cases = {}
    empty = tmp_path / "empty"
    empty.mkdir(parents=True)
    cases["empty"] = (empty, "holds no images")
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "notes.txt").write_text("hello")
    cases["no images"] = (texts, r"holds no images \(1 other files\)")
    one = write_png_folder(good[None], tmp_path / "one")
    cases["one image"] = (one, "holds one image")
    broken = write_png_folder(np.stack([good] * 3), tmp_path / "broken")
    data = (broken / "00001.png").read_bytes()
    (broken / "00001.png").write_bytes(data[: len(data) // 2])
    cases["truncated"] = (broken, r"cannot decode .*00001\.png")
    (tmp_path / "file.png").write_bytes(data)
    cases["a file"] = (tmp_path / "file.png", "is a file: name the folder")
    os.mkfifo(tmp_path / "fifo")
    cases["a fifo"] = (tmp_path / "fifo", "is not a folder")
    cases["missing"] = (tmp_path / "nowhere", "no such folder")
    return cases


def test_bad_folders_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, (path, message) in _bad_folders(tmp_path / "inputs").items():
        before = digest(tmp_path)
        code = run_main("train", "dataset=images", f"dataset.path={path}", *FAST)
        err = capsys.readouterr().err
        assert code != 0, name
        assert len(err.strip().splitlines()) == 1, (name, err)
        assert __import__("re").search(message, err), (name, err)
        assert digest(tmp_path) == before, name


def test_dcgan_fits_28_32_and_64_px_and_refuses_widths_that_do_not() -> None:
    from gantool.config.schema import ModelConfig
    from gantool.nn import nets

    model = ModelConfig(arch="dcgan", latent_dim=8)
    model.g.channels, model.d.channels = None, None
    for size, count in ((28, 2), (32, 3), (64, 4)):
        G, D = nets.generator(model, (3, size, size)), nets.discriminator(model, (3, size, size))
        z = torch.randn(2, 8)
        x = G(z)
        assert x.shape == (2, 3 * size * size) and x.abs().max() <= 1
        assert D(x).shape == (2, 1)
        assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in G.modules()) == count + 1
    model.g.channels = [32, 16, 8]
    with pytest.raises(ConfigError, match=r"model.g.channels=\[32, 16, 8\]: 28 px images take 2"):
        nets.check(model, (1, 28, 28))
    with pytest.raises(ConfigError, match="square images"):
        nets.check(ModelConfig(arch="dcgan"), (1, 28, 30))


def test_eval_scores_swd_and_with_inception_weights_fid_kid_precision_recall(
    digits, tmp_path: Path, stand_in_weights: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`gantool eval RUN --inception-weights FILE` puts FID, KID, precision and recall beside
    SWD, each with its real floor and noise point; without the file, SWD alone. torch-fidelity's
    real code runs, on a stand-in network in Inception's place (no real weights here)."""
    import functools

    _, folder = digits
    overrides = images_overrides(
        folder, *TINY_DCGAN, "trainer.steps=2", "trainer.eval_at_end=false"
    )
    run = tmp_path / "run"
    train(compose_config(overrides), run)

    assert run_main("eval", run, "--num", "20") == 0
    plain = json.loads((run / "eval.json").read_text())["eval"]
    assert {"eval/swd", "eval/swd_real_floor", "eval/swd_noise"} <= plain.keys()
    assert "eval/fid" not in plain
    assert plain["eval/swd_real_floor"] < plain["eval/swd_noise"]

    stand_in = functools.partial(images_module.fid_kid, feature_extractor=STAND_IN, cuda=False)
    monkeypatch.setattr(images_module, "fid_kid", stand_in)
    code = run_main("eval", run, "--num", "20", "--inception-weights", stand_in_weights)
    assert code == 0, capsys.readouterr().err
    scored = json.loads((run / "eval.json").read_text())["eval"]
    for key in ("fid", "kid", "precision", "recall"):
        assert {f"eval/{key}", metric_key(key, "floor"), metric_key(key, "noise")} <= scored.keys()
    assert scored["eval/fid_real_floor"] < scored["eval/fid_noise"]
    assert scored["eval/precision_real"] > scored["eval/precision_noise"]
    assert scored["eval/swd"] == plain["eval/swd"]  # the same seed: the same samples

    code = run_main("eval", run, "--inception-weights", tmp_path / "missing.pth")
    assert code != 0 and "no such file" in capsys.readouterr().err


def test_a_run_decodes_its_folder_once(
    digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config check resolves channels=auto, the stream reads with the resolved count: one
    decode, one cache entry (the cache holds RGB, converted when loaded)."""
    _, folder = digits
    monkeypatch.setenv("GANTOOL_CACHE_DIR", str(tmp_path / "cache"))
    images_module._decoded.clear()
    calls = []
    real = images_module.decode
    monkeypatch.setattr(images_module, "decode", lambda *a: calls.append(a) or real(*a))
    train(compose_config(images_overrides(folder, *TINY_DCGAN, "trainer.steps=2")), tmp_path / "r")
    assert len(calls) == 1
    assert len(list((tmp_path / "cache").glob("images-*.pt"))) == 1
