"""Image-set metrics that work offline: SWD on Laplacian-pyramid patches (gantool.nn.swd), and
FID/KID through torch-fidelity with a tiny stand-in network (gantool.nn.fidelity)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import STAND_IN
from gantool.core.errors import GantoolError
from gantool.nn import fidelity, swd
from gantool.nn.metrics import wasserstein1_per_feature


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the suite runs a worker per core, and two threads each would fight."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bars(num: int, seed: int, size: int = 28, channels: int = 1) -> torch.Tensor:
    """Digit-like images in [-1, 1]: a bright 3-px bar at a random height on a dim noisy
    background, (num, channels, size, size)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(num, channels, size, size, generator=g) * 0.2 - 1
    rows = torch.arange(size)[None, :]  # (1, size)
    top = torch.randint(2, size - 5, (num, 1), generator=g)
    inside = (rows >= top) & (rows < top + 3)  # (num, size): the bar's rows
    images[:, :, :, size // 5 : size - size // 5] += 2 * inside[:, None, :, None]
    return images.clamp(-1, 1)


def blurred(images: torch.Tensor) -> torch.Tensor:
    """A 3x3 box blur: the same shapes with their edges and texture smoothed away."""
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    return F.avg_pool2d(padded, 3, stride=1)


# --- SWD ---------------------------------------------------------------------------------------


def fields(num: int, seed: int, size: int = 28) -> torch.Tensor:
    """Texture images in (-1, 1): a smooth random field (7x7 noise enlarged) plus fine noise,
    (num, 1, size, size). Every patch of every image is a fresh draw, so even a few dozen
    images give a stable SWD floor (a digit set's coarse levels need thousands)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(num, 1, 7, 7, generator=g)
    coarse = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    return torch.tanh(coarse + 0.3 * torch.randn(num, 1, size, size, generator=g))


def test_swd_of_one_set_is_its_floor_and_a_blurred_set_is_far():
    real = fields(96, seed=0)
    first, second, third = real[:32], real[32:64], real[64:]
    floor = swd.sliced_wasserstein(first, second)
    again = swd.sliced_wasserstein(first, third)
    far = swd.sliced_wasserstein(first, blurred(second))
    assert set(floor) == {"swd", "swd_28", "swd_14"}
    # Two pairs of samples of one set: the same floor, up to sampling noise.
    assert 0.5 < again["swd"] / floor["swd"] < 2
    assert far["swd_28"] > 3 * max(floor["swd_28"], again["swd_28"])  # the blur is fine detail
    assert far["swd"] > 1.3 * max(floor["swd"], again["swd"])
    # Each set's patches are normalised by its own statistics, as Karras et al. do: a contrast
    # change of a whole set does not count.
    assert swd.sliced_wasserstein(first, second * 0.5)["swd"] == pytest.approx(floor["swd"])


def test_swd_is_deterministic_per_seed_and_leaves_torch_rng_alone():
    real, fake = bars(12, seed=1), blurred(bars(12, seed=2))
    state = torch.get_rng_state()
    first = swd.sliced_wasserstein(real, fake, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert swd.sliced_wasserstein(real, fake, seed=3) == first
    assert swd.sliced_wasserstein(real, fake, seed=4) != first


@pytest.mark.parametrize(
    ("size", "channels", "levels"),
    [(28, 1, [28, 14]), (32, 3, [32, 16]), (64, 3, [64, 32, 16])],
)
def test_swd_has_one_key_per_pyramid_level(size: int, channels: int, levels: list[int]):
    real = bars(5, seed=5, size=size, channels=channels)
    fake = bars(7, seed=6, size=size, channels=channels)  # the sets may differ in size
    result = swd.sliced_wasserstein(real, fake)
    assert swd.resolutions(size) == levels
    assert set(result) == {"swd", *(f"swd_{res}" for res in levels)}
    per_level = [result[f"swd_{res}"] for res in levels]
    assert all(value > 0 for value in per_level)
    assert result["swd"] == pytest.approx(sum(per_level) / len(levels))


def test_swd_refuses_images_too_small_for_a_level():
    with pytest.raises(ValueError, match="under 14 px"):
        swd.sliced_wasserstein(torch.zeros(2, 1, 12, 12), torch.zeros(2, 1, 12, 12))


def test_one_dimensional_distance_is_exact_for_unequal_sizes():
    """Between sorted projections of 70 and 45 points, as between 50 and 50: the area between
    the two empirical CDFs, which gantool.nn.metrics computes another way."""
    g = torch.Generator().manual_seed(7)
    for n, m in ((70, 45), (50, 50)):
        a = torch.randn(3, n, generator=g).sort(dim=1).values
        b = (torch.randn(3, m, generator=g) * 1.3 + 0.2).sort(dim=1).values
        want = wasserstein1_per_feature(a.T, b.T).sum().item()
        assert swd._wasserstein1_sorted(a, b).item() == pytest.approx(want, rel=1e-6)


def test_laplacian_pyramid_adds_back_up_to_the_image():
    images = bars(3, seed=8, size=28)
    levels = swd.laplacian_pyramid(images, 2)
    assert [level.shape[-1] for level in levels] == [28, 14]
    rebuilt = levels[0] + swd._pyramid_up(levels[1], 28, 28)
    assert torch.allclose(rebuilt, images, atol=1e-5)


# --- FID and KID through torch-fidelity ---------------------------------------------------------


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images + 1) * 127.5).round().to(torch.uint8)


def test_fid_kid_are_zero_for_one_set_and_larger_for_another(stand_in_weights: Path):
    real = as_uint8(bars(100, seed=9, channels=3))
    first, second = real[:50], real[50:]
    fake = as_uint8(blurred(bars(50, seed=10, channels=3)).roll(6, dims=2))
    state = torch.get_rng_state()
    same = fidelity.fid_kid(first, first, stand_in_weights, STAND_IN, cuda=False)
    halves = fidelity.fid_kid(first, second, stand_in_weights, STAND_IN, cuda=False)
    other = fidelity.fid_kid(first, fake, stand_in_weights, STAND_IN, cuda=False)
    assert torch.equal(torch.get_rng_state(), state)
    assert set(same) == {"fid", "kid", "kid_std", "kid_subset_size", "precision", "recall"}
    # A set against itself: every image lies in the other's manifold.
    assert same["precision"] == same["recall"] == 1.0
    assert same["kid_subset_size"] == 50  # 50 images: subsets of all of them, not of 1000
    assert abs(same["fid"]) < 1e-6
    # KID's unbiased estimate pairs each image with itself across the sets: slightly negative.
    assert -0.1 < same["kid"] < 0
    assert other["fid"] > 5 * halves["fid"] > 0
    assert other["kid"] > 10 * abs(halves["kid"])


def test_fid_kid_takes_grey_images_and_unequal_sizes(stand_in_weights: Path):
    grey = as_uint8(bars(30, seed=11))  # (30, 1, 28, 28): repeated into RGB
    rgb = grey.expand(-1, 3, -1, -1)[:20]
    result = fidelity.fid_kid(grey, rgb, stand_in_weights, STAND_IN, cuda=False)
    assert result["kid_subset_size"] == 20
    assert fidelity.kid_subset_size(5000, 20000) == 1000
    with pytest.raises(ValueError, match="uint8"):
        fidelity.fid_kid(grey.float(), rgb, stand_in_weights, STAND_IN, cuda=False)


def test_missing_inception_weights_give_one_line(
    stand_in_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    name = "weights-inception-2015-12-05-6726825d.pth"
    assert fidelity.inception_file_name() == name
    with pytest.raises(GantoolError) as given:
        fidelity.find_weights(tmp_path / "nowhere.pth", option="--inception-weights")
    assert str(given.value) == (
        f"--inception-weights={tmp_path / 'nowhere.pth'}: no such file (torch-fidelity's {name})"
    )
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # torch.hub's folder: tmp_path/hub
    cached = tmp_path / "hub" / "checkpoints" / name
    with pytest.raises(GantoolError) as absent:
        fidelity.find_weights(None)
    message = str(absent.value)
    assert "\n" not in message and name in message and str(cached) in message
    assert "eval.inception_weights=PATH" in message
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert fidelity.find_weights(None) == cached  # already there: used, never downloaded


def test_a_weights_file_that_would_run_code_is_refused(stand_in_weights: Path, tmp_path: Path):
    evil = tmp_path / "evil.pth"
    torch.save({"payload": Path("x")}, evil)  # not plain tensors: weights_only refuses it
    real = as_uint8(bars(4, seed=12))
    with pytest.raises(GantoolError, match="not a weights file torch can load safely"):
        fidelity.fid_kid(real, real, evil, STAND_IN, cuda=False)


def test_fid_without_torch_fidelity_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import now raises ImportError
    images = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(GantoolError) as missing:
        fidelity.fid_kid(images, images, Path("weights.pth"))
    assert str(missing.value) == (
        "FID and KID need the torch-fidelity package: pip install 'gantool[fid]'"
    )
