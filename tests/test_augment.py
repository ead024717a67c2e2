"""DiffAugment: each policy does what the paper's official code does, with its ranges; the
module is reproducible from its seed and its state_dict, leaves the global RNG alone, is the
identity in eval mode and builds on the meta device."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from gantool.nn.augment import POLICIES, DiffAugment, augment

# (channels, size): 1- and 3-channel images of the square sizes gantool trains on
SHAPES = [(1, 28), (3, 28), (1, 32), (3, 32), (1, 64), (3, 64)]
MAX_SHIFT = {28: 4, 32: 4, 64: 8}  # round(size / 8), half up
CUTOUT_SIDE = {28: 14, 32: 16, 64: 32}  # round(size / 2), half up


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are small: one thread does them in milliseconds, where two wait (tenths of
    a second) for a core that the suite's other worker holds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def positive_images(num: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """Images with no zero pixel (values in [0.1, 1]), so a zero in the output is a fill."""
    generator = torch.Generator().manual_seed(seed)
    return 0.1 + 0.9 * torch.rand(num, channels, size, size, generator=generator)


def moved(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """image (C, H, W) with its content moved by (dy, dx) pixels, zero where nothing lands:
    written with slices, independently of augment's index gather."""
    h, w = image.shape[-2:]
    out = torch.zeros_like(image)
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def zero_border(lines: torch.Tensor) -> int:
    """How far a positive image moved along one axis, from which of its lines hold content:
    zero lines at the start mean a move forward, at the end a move back."""
    start = int(lines.int().argmax())
    end = int(lines.flip(0).int().argmax())
    return start - end


@pytest.mark.parametrize(("channels", "size"), SHAPES)
def test_translation_moves_content_by_whole_pixels_and_zero_fills(channels: int, size: int):
    x = positive_images(128, channels, size)
    y = augment(x, ["translation"], torch.Generator().manual_seed(1))
    assert y.shape == x.shape
    shifts = []  # (dy, dx) of each image
    for image, out in zip(x, y, strict=True):
        content = out.ne(0)
        dy, dx = zero_border(content.any(dim=(0, 2))), zero_border(content.any(dim=(0, 1)))
        assert torch.equal(out, moved(image, dy, dx))
        shifts.append((dy, dx))
    bound = MAX_SHIFT[size]
    for axis in zip(*shifts, strict=True):  # within the bound, both ends drawn, on each axis
        assert min(axis) == -bound and max(axis) == bound


@pytest.mark.parametrize(("channels", "size"), SHAPES)
def test_cutout_zeroes_one_square_of_half_the_size_per_image(channels: int, size: int):
    x = positive_images(64, channels, size)
    y = augment(x, ["cutout"], torch.Generator().manual_seed(2))
    side, full, clipped_rows, clipped_cols = CUTOUT_SIDE[size], 0, 0, 0
    for image, out in zip(x, y, strict=True):
        zero = out.eq(0)
        assert torch.equal(zero.all(dim=0), zero.any(dim=0))  # the same hole in every channel
        hole = zero[0]
        rows, cols = hole.any(dim=1).nonzero()[:, 0], hole.any(dim=0).nonzero()[:, 0]
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        height, width = int(bottom - top), int(right - left)
        assert hole[top:bottom, left:right].all() and int(hole.sum()) == height * width
        assert torch.equal(out, torch.where(hole, 0.0, image))  # the rest untouched
        for extent, start, end in ((height, top, bottom), (width, left, right)):
            if start > 0 and end < size:
                assert extent == side
            else:  # clipped at the border, its centre still inside the image
                assert side // 2 <= extent <= side
        full += height == side and width == side
        clipped_rows += height < side
        clipped_cols += width < side
    assert full and clipped_rows and clipped_cols  # centres reach the borders on both axes


def size_of(batch: torch.Tensor) -> torch.Tensor:
    """(N,) the Euclidean norm of each item of a batch."""
    return batch.flatten(1).norm(dim=1)


@pytest.mark.parametrize(("channels", "size"), SHAPES)
def test_color_shifts_brightness_and_scales_saturation_and_contrast_in_range(
    channels: int, size: int
):
    x = positive_images(64, channels, size).double() * 2 - 1
    y = augment(x, ["color"], torch.Generator().manual_seed(3))
    # brightness moves each image's mean; contrast scales the grey image about it; saturation
    # scales each pixel's colour about its grey, then contrast scales that too
    brightness = y.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))
    grey_x, grey_y = x.mean(dim=1), y.mean(dim=1)  # (N, H, W)
    spread_x = grey_x - grey_x.mean(dim=(1, 2), keepdim=True)
    spread_y = grey_y - grey_y.mean(dim=(1, 2), keepdim=True)
    contrast = size_of(spread_y) / size_of(spread_x)
    colour_x, colour_y = x - grey_x[:, None], y - grey_y[:, None]
    mean_y = x.mean(dim=(1, 2, 3)) + brightness
    expected = (spread_x * contrast[:, None, None] + mean_y[:, None, None])[:, None]
    if channels == 1:
        assert colour_y.abs().max() < 1e-12  # no colour to saturate
    else:
        saturation = size_of(colour_y) / size_of(colour_x) / contrast
        assert saturation.min() >= 0 and saturation.max() < 2
        assert saturation.min() < 0.2 and saturation.max() > 1.8
        expected = expected + colour_x * (saturation * contrast)[:, None, None, None]
    assert (y - expected).abs().max() < 1e-9  # nothing else changed
    assert brightness.min() >= -0.5 and brightness.max() < 0.5
    assert brightness.min() < -0.4 and brightness.max() > 0.4
    assert contrast.min() >= 0.5 and contrast.max() < 1.5
    assert contrast.min() < 0.6 and contrast.max() > 1.4


def test_same_seed_same_augmentations_and_each_call_differs():
    x = positive_images(8, 3, 32) * 2 - 1
    first, again = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = augment(x, POLICIES, first)
    assert torch.equal(a, augment(x, POLICIES, again))
    assert not torch.equal(a, augment(x, POLICIES, first))  # the next call draws anew
    assert not torch.equal(a, augment(x, POLICIES, torch.Generator().manual_seed(8)))
    assert augment(x, [], first) is x


def test_gradients_match_finite_differences():
    x = (positive_images(2, 3, 8) * 2 - 1).double()

    def augmented(images: torch.Tensor) -> torch.Tensor:
        return augment(images, POLICIES, torch.Generator().manual_seed(4))  # the same draws

    directions = torch.Generator().manual_seed(1)
    for _ in range(3):  # u . J v both ways, for random u and v (gradcheck's fast mode)
        u, v = torch.randn((2, *x.shape), generator=directions, dtype=x.dtype)
        step = 1e-6
        numerical = ((augmented(x + step * v) - augmented(x - step * v)) * u).sum() / (2 * step)
        leaf = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((augmented(leaf) * u).sum(), leaf)
        analytical = (grad * v).sum()
        assert abs(numerical - analytical) < 1e-6 * max(1.0, abs(float(analytical)))


def test_gradients_pass_where_pixels_stay_and_stop_where_they_are_cut_or_leave():
    x = positive_images(16, 1, 28).requires_grad_(True)
    cut = augment(x, ["cutout"], torch.Generator().manual_seed(5))
    (grad,) = torch.autograd.grad(cut.sum(), x)
    assert torch.equal(grad, cut.ne(0).float())  # 1 outside the hole, 0 inside
    shifted = augment(x, ["translation"], torch.Generator().manual_seed(6))
    (grad,) = torch.autograd.grad(shifted.sum(), x)
    for out, g in zip(shifted.detach(), grad, strict=True):
        content = out.ne(0)
        dy, dx = zero_border(content.any(dim=(0, 2))), zero_border(content.any(dim=(0, 1)))
        # 1 for each pixel that lands inside the frame, 0 for those moved out of it
        assert torch.equal(g, moved(moved(torch.ones_like(g), dy, dx), -dy, -dx))


def rows(num: int = 4, shape: tuple[int, int, int] = (3, 32, 32)) -> torch.Tensor:
    """Flat rows (num, C*H*W) of square images in [-0.8, 1], as D takes them."""
    channels, size, _ = shape
    return positive_images(num, channels, size).flatten(1) * 2 - 1


def test_module_augments_flat_rows_while_training_and_is_the_identity_in_eval():
    x = rows()
    module = DiffAugment(POLICIES, (3, 32, 32), seed=1)
    expected = augment(x.view(4, 3, 32, 32), POLICIES, torch.Generator().manual_seed(1))
    module.eval()
    assert module(x) is x
    module.train()  # the eval call drew nothing: the first training call is the seed's first
    out = module(x)
    assert out.shape == x.shape and torch.equal(out, expected.flatten(1))
    with pytest.raises(ValueError, match=r"rows \(N, 3072\)"):
        module(x[:, :-1])


def test_unknown_policy_names_the_valid_ones():
    for policy in (["color", "rotate"], "color,cutout"):
        with pytest.raises(ValueError, match="color, translation, cutout"):
            DiffAugment(policy, (1, 28, 28))
        with pytest.raises(ValueError, match="color, translation, cutout"):
            augment(torch.zeros(1, 1, 28, 28), policy, torch.Generator())


def saved(module: nn.Module) -> dict:
    """module's state_dict through torch.save and torch.load(weights_only=True), as a
    checkpoint holds it."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_state_dict_round_trip_continues_the_same_augmentations():
    x = rows(shape=(1, 28, 28))
    running = DiffAugment(POLICIES, (1, 28, 28), seed=5)
    running(x)
    state = saved(running)
    fresh = DiffAugment(POLICIES, (1, 28, 28), seed=99)  # never ran: the state waits
    fresh.load_state_dict(state)
    used = DiffAugment(POLICIES, (1, 28, 28), seed=99)
    used(x)  # its generator exists: the state replaces it
    used.load_state_dict(state)
    for _ in range(2):
        expected = running(x)
        assert torch.equal(fresh(x), expected) and torch.equal(used(x), expected)
    # a never-run module's state is its seed's: it carries the seed to the module loading it
    unseeded = DiffAugment(POLICIES, (1, 28, 28), seed=0)
    unseeded.load_state_dict(saved(DiffAugment(POLICIES, (1, 28, 28), seed=5)))
    assert torch.equal(unseeded(x), DiffAugment(POLICIES, (1, 28, 28), seed=5)(x))


def test_a_state_of_another_devices_form_continues_deterministically():
    # a CUDA generator's state is 16 bytes (Philox seed and offset); a CPU one cannot take it
    philox = torch.tensor([42, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0], dtype=torch.uint8)
    x = rows()
    outputs = []
    for _ in range(2):
        module = DiffAugment(POLICIES, (3, 32, 32))
        module.load_state_dict({"_extra_state": philox})
        outputs.append(module(x))
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], DiffAugment(POLICIES, (3, 32, 32))(x))
    with pytest.raises(ValueError, match="generator state"):
        module.load_state_dict({"_extra_state": torch.zeros(2, 8)})


def test_global_rng_is_untouched():
    before = torch.get_rng_state()
    module = DiffAugment(POLICIES, (3, 32, 32), seed=2)
    x = rows().requires_grad_(True)
    module(x).square().sum().backward()
    module.load_state_dict(module.state_dict())
    augment(x.detach().view(4, 3, 32, 32), POLICIES, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), before)


def test_builds_on_the_meta_device_without_a_generator():
    before = torch.get_rng_state()
    with torch.device("meta"):
        net = nn.Sequential(DiffAugment(POLICIES, (3, 32, 32), seed=3), nn.Linear(3072, 1))
        assert net[0](torch.empty(2, 3072)).shape == (2, 3072)
    state = net.state_dict()["0._extra_state"]
    assert state.device.type == "cpu" and state.dtype == torch.uint8
    assert torch.equal(state, torch.Generator().manual_seed(3).get_state())  # drew nothing
    assert torch.equal(torch.get_rng_state(), before)
