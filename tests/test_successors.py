"""SaliencyMix, FMix, ResizeMix and GuidedMixup: the official code's outputs reproduced from the same
draws (tests/data/successors_reference.npz, made by make_successors_fixture.py), each mask, box or
ratio and its label weights against an independent computation, the draw order, the door checks, and
SaliencyMix without OpenCV's contrib modules."""
from __future__ import annotations

import functools
import math
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from comixup.mixing import fmix, guided, resizemix, saliencymix
from comixup.mixing.fmix import FMix
from comixup.mixing.guided import GuidedMixupAP, GuidedMixupSR
from comixup.mixing.resizemix import ResizeMix
from comixup.mixing.saliencymix import SaliencyMix

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).with_name("data") / "successors_reference.npz"
ULP = np.finfo(np.float64).eps


def _has_saliency_detector() -> bool:
    try:
        saliencymix.require_saliency_detector()
    except ImportError:
        return False
    return True


needs_detector = pytest.mark.skipif(not _has_saliency_detector(), reason='needs OpenCV contrib: '
                                    'pip install "comixup[saliencymix]"')


@functools.lru_cache(maxsize=1)
def reference() -> dict:
    """The stored official outputs, with the normalised images rebuilt as the official loaders make them."""
    with np.load(REFERENCE) as stored:
        data = {key: stored[key] for key in stored.files}
    pixels = torch.from_numpy(data["images/uint8_hwc_rgb"]).permute(0, 3, 1, 2)
    normalise = T.Normalize(data["images/mean"].tolist(), data["images/std"].tolist())
    data["images/normalised"] = normalise(pixels.float().div(255))
    for variant in ("cfg", "uniform"):
        data[f"resizemix/{variant}/mixed_uint8"] = data.pop(f"resizemix/{variant}/mixed_delta") + pixels.numpy()[None]
    return data


def images() -> tuple[torch.Tensor, torch.Tensor]:
    data = reference()
    return data["images/normalised"].clone(), torch.from_numpy(data["images/labels"])


def one_hot(labels: torch.Tensor, classes: int = 10) -> torch.Tensor:
    return F.one_hot(labels, classes).float()


def smooth_batch(batch: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random images (B, 3, size, size), distinct one-hot classes, and smooth positive saliency maps."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=generator)
    y = torch.eye(batch)[torch.randperm(batch, generator=generator)]
    coarse = torch.rand(batch, 1, 4, 4, generator=generator)
    saliency = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    return x, y, saliency


# --------------------------------------------------------------------------- FMix

def official_low_frequency(normals: np.ndarray, height: int, width: int, decay: float = 3.0) -> np.ndarray:
    """The official make_low_freq_image (ch=1), written from its description, given its normals."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[: width // 2 + 1 + width % 2]
    scale = 1 / np.maximum(np.sqrt(fx * fx + fy * fy), 1 / max(height, width)) ** decay
    spectrum = scale[None, :, :, None] * normals[None]
    with warnings.catch_warnings():
        # numpy 2 asks for axes along with s; the official call gives none
        warnings.simplefilter("ignore", DeprecationWarning)
        mask = np.real(np.fft.irfftn(spectrum[:, 0] + 1j * spectrum[:, 1], (height, width)))
    mask = mask[:1, :height, :width]
    mask = mask - mask.min()
    return (mask / mask.max())[0]


@pytest.mark.parametrize("size", [32, 64])
def test_fmix_published_spectrum_reproduces_the_official_masks(size):
    data = reference()
    for k, seed in enumerate(data["fmix/seeds"].tolist()):
        # sample_mask's draws: numpy's beta, numpy's normals, then Python's coin
        np.random.seed(seed)
        random.seed(seed)
        lam = np.random.beta(1.0, 1.0)
        normals = fmix.draw_spectrum_normals(size, size)
        round_up = random.random() > 0.5
        assert lam == data[f"fmix/lam_{size}"][k]
        assert round_up == data[f"fmix/ceil_{size}"][k]
        image = fmix.low_frequency_image(normals, size, size, 3.0, "published")
        mask = fmix.binarise_mask(image, lam, round_up)
        assert np.array_equal(mask.astype(np.float32), data[f"fmix/mask_{size}"][k, 0])

        np.random.seed(seed)
        normals = fmix.draw_spectrum_normals(size, size)
        low = fmix.low_frequency_image(normals, size, size, 3.0, "published")
        # bit for bit the official expression on this machine; numpy's float64 power and FFT may round
        # the last bit differently on another CPU (the stored images came from one with AVX-512)
        assert np.array_equal(low, official_low_frequency(normals, size, size))
        np.testing.assert_allclose(low, data[f"fmix/lowfreq_{size}"][k, 0], rtol=0, atol=4 * ULP)


def test_fmix_mixer_draws_in_the_official_order_from_numpys_global_state():
    x, labels = images()
    for seed in (0, 3):
        np.random.seed(seed)
        mixed, mixed_y = FMix(spectrum="published", num_classes=10)(x, labels)
        np.random.seed(seed)
        lam = np.random.beta(1.0, 1.0)
        normals = np.random.randn(1, 32, 17, 2)[0]
        round_up = np.random.rand() > 0.5
        perm = np.random.permutation(16)
        mask = torch.from_numpy(fmix.binarise_mask(official_low_frequency(normals, 32, 32), lam, round_up)).float()
        assert torch.equal(mixed, mask * x + (1 - mask) * x[perm])
        assert torch.equal(mixed_y, lam * one_hot(labels) + (1 - lam) * one_hot(labels)[perm])


@pytest.mark.parametrize("spectrum", fmix.SPECTRA)
@pytest.mark.parametrize("shape", [(32, 32), (16, 24), (15, 9)])
def test_fmix_mask_mean_is_within_one_pixel_of_lam_and_pixels_come_from_the_pair(spectrum, shape):
    height, width = shape
    x, y, _ = smooth_batch(6, seed=1)
    x = F.interpolate(x, size=shape)
    for seed in range(6):
        mixer = FMix(spectrum=spectrum, rng=np.random.default_rng(seed))
        drawn = FMix(spectrum=spectrum, rng=np.random.default_rng(seed)).draw(6, height, width)
        mixed, mixed_y = mixer(x, y)
        mask = drawn.mask
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert abs(mask.mean() - drawn.lam) <= 1 / (height * width)
        keep = torch.from_numpy(mask).bool()
        assert torch.equal(mixed[:, :, keep], x[:, :, keep])
        assert torch.equal(mixed[:, :, ~keep], x[drawn.perm][:, :, ~keep])
        torch.testing.assert_close(mixed_y, drawn.lam * y + (1 - drawn.lam) * y[drawn.perm])


def test_fmix_soft_masks_ramp_around_the_threshold_and_keep_the_mean():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        image = fmix.low_frequency_image(fmix.draw_spectrum_normals(32, 32, rng), 32, 32)
        lam = 0.2 + 0.6 * rng.random()
        mask = fmix.binarise_mask(image, lam, round_up=True, max_soft=0.1)
        assert mask.min() == 0 and mask.max() == 1 and ((mask > 0) & (mask < 1)).sum() > 100
        assert abs(mask.mean() - lam) <= 1 / mask.size
        # brighter pixels never get less of the mask
        order = np.argsort(image.reshape(-1))
        assert np.all(np.diff(mask.reshape(-1)[order]) >= 0)


def test_fmix_published_spectrum_has_no_energy_at_horizontal_frequencies_beyond_one():
    rng = np.random.default_rng(0)
    for height, width in ((32, 32), (64, 64), (32, 48)):
        normals = fmix.draw_spectrum_normals(height, width, rng)
        for spectrum in fmix.SPECTRA:
            energy = np.abs(np.fft.fft2(fmix.low_frequency_image(normals, height, width, 3.0, spectrum))) ** 2
            energy[0, 0] = 0  # the mean
            beyond_one = energy[:, 2:width - 1].sum() / energy.sum()  # |k_x| >= 2
            vertical = energy[2:height - 1, :].sum() / energy.sum()  # |k_y| >= 2
            if spectrum == "published":
                assert beyond_one < 1e-20
            else:
                assert beyond_one > 1e-4
            assert vertical > 1e-5  # both vary from row to row


# --------------------------------------------------------------------------- SaliencyMix

@needs_detector
def test_saliencymix_detector_maps_and_boxes_reproduce_the_official_ones():
    data = reference()
    x, _ = images()
    mean, std = data["images/mean"].tolist(), data["images/std"].tolist()
    for i in range(16):
        rgb = np.ascontiguousarray(data["images/uint8_hwc_rgb"][i])
        bgr = saliencymix.detector_image(x[i], "uint8", mean, std)
        assert np.array_equal(bgr, rgb[:, :, ::-1])  # the decoded pixels, recovered exactly, in OpenCV's order
        inputs = {"bgr_u8": bgr, "rgb_u8": rgb, "norm": saliencymix.detector_image(x[i], "normalised")}
        for variant, image in inputs.items():
            saliency_map = saliencymix.fine_grained_saliency(image)
            assert np.array_equal(saliency_map, data[f"saliencymix/{variant}/saliency"][i])
            for j, lam in enumerate(data["saliencymix/lams"]):
                top, bottom, left, right = saliencymix.saliency_box(saliency_map, float(lam))
                assert [top, left, bottom, right] == data[f"saliencymix/{variant}/box"][i, j].tolist()


def _quantised_argmax(saliency_map: np.ndarray) -> tuple[int, int]:
    quantised = (saliency_map * 255).astype(np.uint8)
    flat = int(np.argmax(quantised))
    return flat // quantised.shape[1], flat % quantised.shape[1]


@needs_detector
@pytest.mark.parametrize("detector_input", saliencymix.DETECTOR_INPUTS)
def test_saliencymix_box_is_centred_on_the_detectors_argmax_and_labels_follow_its_area(detector_input):
    import cv2

    data = reference()
    x, labels = images()
    mean, std = data["images/mean"].tolist(), data["images/std"].tolist()
    clipped = 0
    for seed in range(12):
        mixer = SaliencyMix(prob=1.0, mean=mean, std=std, detector_input=detector_input, num_classes=10,
                            rng=np.random.default_rng(seed))
        mixed, mixed_y = mixer(x, labels)
        rng = np.random.default_rng(seed)
        assert rng.random() < 1.0
        lam, perm = rng.beta(1.0, 1.0), rng.permutation(16)
        if detector_input == "uint8":
            image = np.ascontiguousarray(data["images/uint8_hwc_rgb"][perm[0]][:, :, ::-1])
        else:
            image = np.ascontiguousarray(x[perm[0]].numpy().transpose(1, 2, 0))
        _, saliency_map = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(image)
        row, col = _quantised_argmax(saliency_map)
        half = int(32 * math.sqrt(1 - lam)) // 2
        top, bottom, left, right = max(row - half, 0), min(row + half, 32), max(col - half, 0), min(col + half, 32)
        clipped += (top, bottom, left, right) != (row - half, row + half, col - half, col + half)
        inside = torch.zeros(32, 32, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        assert torch.equal(mixed[:, :, inside], x[perm][:, :, inside])
        assert torch.equal(mixed[:, :, ~inside], x[:, :, ~inside])
        kept = 1 - inside.float().mean().item()
        torch.testing.assert_close(mixed_y, kept * one_hot(labels) + (1 - kept) * one_hot(labels)[perm])
    assert clipped > 0  # some boxes met the border


@needs_detector
def test_saliencymix_unmixed_batches_draw_only_the_coin_and_come_back_unchanged():
    data = reference()
    x, labels = images()
    mixer = SaliencyMix(prob=0.0, mean=data["images/mean"].tolist(), std=data["images/std"].tolist(),
                        num_classes=10)
    np.random.seed(5)
    out_x, out_y = mixer(x, labels)
    after = np.random.rand()
    np.random.seed(5)
    np.random.rand()
    assert after == np.random.rand()
    assert out_x is x and torch.equal(out_y, one_hot(labels))


@needs_detector
def test_saliencymix_global_state_draws_coin_then_lam_then_permutation():
    data = reference()
    x, labels = images()
    mixer = SaliencyMix(prob=0.5, mean=data["images/mean"].tolist(), std=data["images/std"].tolist(),
                        num_classes=10)
    for seed in range(4):
        np.random.seed(seed)
        mixed, mixed_y = mixer(x, labels)
        np.random.seed(seed)
        if not np.random.rand(1)[0] < 0.5:
            assert mixed is x
            continue
        lam = np.random.beta(1.0, 1.0)
        perm = np.random.permutation(16)
        bgr = np.ascontiguousarray(data["images/uint8_hwc_rgb"][perm[0]][:, :, ::-1])
        top, bottom, left, right = saliencymix.saliency_box(saliencymix.fine_grained_saliency(bgr), lam)
        expected = x.clone()
        expected[:, :, top:bottom, left:right] = x[perm][:, :, top:bottom, left:right]
        assert torch.equal(mixed, expected)


def _one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and message
    return message


@pytest.mark.parametrize("how", ["no contrib", "no OpenCV"])
def test_saliencymix_without_opencv_contrib_names_the_extra_and_the_others_still_work(how, monkeypatch):
    if how == "no OpenCV":
        monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    else:
        cv2 = pytest.importorskip("cv2")
        monkeypatch.delattr(cv2, "saliency", raising=False)
    with pytest.raises(ImportError) as caught:
        SaliencyMix(mean=(0.5,), std=(0.25,), num_classes=10)
    assert 'pip install "comixup[saliencymix]"' in _one_line(caught.value)
    with pytest.raises(ImportError) as caught:
        saliencymix.fine_grained_saliency(np.zeros((8, 8, 3), np.uint8))
    assert "comixup[saliencymix]" in _one_line(caught.value)

    x, y, saliency = smooth_batch(4)
    for mixer, args in ((FMix(), ()), (ResizeMix(), ()), (GuidedMixupAP(mix_prob=1.0), (saliency,)),
                        (GuidedMixupSR(mix_prob=1.0), ())):
        mixed, mixed_y = mixer(x, y, *args)
        assert mixed.shape == x.shape and torch.allclose(mixed_y.sum(1), torch.ones(4))


@needs_detector
def test_a_built_saliencymix_that_loses_the_detector_fails_in_one_line(monkeypatch):
    import cv2

    mixer = SaliencyMix(prob=1.0, mean=(0.5,), std=(0.25,), num_classes=10)
    monkeypatch.delattr(cv2, "saliency")
    x, labels = images()
    with pytest.raises(ImportError) as caught:
        mixer(x, labels)
    assert "comixup[saliencymix]" in _one_line(caught.value)


@pytest.mark.slow  # a child process
def test_importing_the_successors_loads_neither_opencv_nor_torchvision():
    code = ("import sys; import comixup.mixing.saliencymix, comixup.mixing.fmix, comixup.mixing.resizemix, "
            "comixup.mixing.guided; print(sorted(m for m in ('cv2', 'torchvision', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- ResizeMix

@pytest.mark.parametrize("variant", ["cfg", "uniform"])
def test_resizemix_reproduces_openmixup_given_its_draws(variant):
    data = reference()
    x, _ = images()
    normalise = T.Normalize(data["images/mean"].tolist(), data["images/std"].tolist())
    use_alpha = bool(data[f"resizemix/{variant}/use_alpha"])
    for k, seed in enumerate(data["resizemix/seeds"].tolist()):
        if use_alpha:  # whether OpenMixup's beta draw fell outside the scope and was drawn again
            np.random.seed(seed)
            assert (not 0.1 <= np.random.beta(1.0, 1.0) <= 0.8) == data[f"resizemix/{variant}/tao_resampled"][k]
        np.random.seed(seed)  # OpenMixup: torch.randperm first (stored), then numpy's tau, column, row
        tau = resizemix.draw_scale((0.1, 0.8), 1.0 if use_alpha else None)
        centre_col, centre_row = np.random.randint(32), np.random.randint(32)
        assert tau == data[f"resizemix/{variant}/tao"][k]
        top, bottom, left, right = resizemix.resize_box(32, 32, tau, centre_row, centre_col)
        assert [left, top, right, bottom] == data[f"resizemix/{variant}/box"][k].tolist()
        perm = data[f"resizemix/{variant}/perm"][k]
        mixed = resizemix.paste_resized(x, perm, (top, bottom, left, right))
        expected = normalise(torch.from_numpy(data[f"resizemix/{variant}/mixed_uint8"][k]).float().div(255))
        assert torch.equal(mixed, expected)
        assert 1 - (bottom - top) * (right - left) / 1024 == data[f"resizemix/{variant}/lam"][k]


def _nearest_rows(size_in: int, size_out: int) -> np.ndarray:
    """Which source row each of size_out rows takes under PyTorch's 'nearest' (float32 scale, floor)."""
    scale = np.float32(size_in) / np.float32(size_out)
    return np.minimum(np.floor(np.arange(size_out, dtype=np.float32) * scale).astype(np.int64), size_in - 1)


@pytest.mark.parametrize("use_alpha", [False, True])
@pytest.mark.parametrize("shape", [(32, 32), (20, 28)])
def test_resizemix_pastes_the_whole_resized_partner_and_weighs_labels_by_its_area(use_alpha, shape):
    height, width = shape
    x, y, _ = smooth_batch(5, seed=2)
    x = F.interpolate(x, size=shape)
    squashed = 0
    for seed in range(12):
        mixed, mixed_y = ResizeMix(use_alpha=use_alpha, rng=np.random.default_rng(seed))(x, y)
        rng = np.random.default_rng(seed)
        perm = rng.permutation(5)
        tau = rng.beta(1.0, 1.0) if use_alpha else rng.uniform(0.1, 0.8)
        if not 0.1 <= tau <= 0.8:
            tau = rng.uniform(0.1, 0.8)
        col, row = rng.integers(width), rng.integers(height)
        half_h, half_w = int(height * tau) // 2, int(width * tau) // 2
        top, bottom = max(row - half_h, 0), min(row + half_h, height)
        left, right = max(col - half_w, 0), min(col + half_w, width)
        squashed += (bottom - top, right - left) != (2 * half_h, 2 * half_w)
        rows, cols = _nearest_rows(height, bottom - top), _nearest_rows(width, right - left)
        resized = x[perm][:, :, rows][:, :, :, cols]
        assert torch.equal(mixed[:, :, top:bottom, left:right], resized)
        assert torch.equal(mixed[:, :, top:bottom, left:right],
                           F.interpolate(x[perm], size=(bottom - top, right - left), mode="nearest"))
        outside = torch.ones(height, width, dtype=torch.bool)
        outside[top:bottom, left:right] = False
        assert torch.equal(mixed[:, :, outside], x[:, :, outside])
        kept = 1 - (bottom - top) * (right - left) / (height * width)
        torch.testing.assert_close(mixed_y, kept * y + (1 - kept) * y[perm])
    assert squashed > 0


# --------------------------------------------------------------------------- GuidedMixup

def test_farthest_neighbour_cycle_reproduces_onecycle_cover():
    data = reference()
    for batch in data["guided/onecycle/B"]:
        order = guided.farthest_neighbour_cycle(data[f"guided/onecycle/D{batch}"])
        assert np.array_equal(order, data[f"guided/onecycle/order{batch}"])
    ties = guided.farthest_neighbour_cycle(data["guided/onecycle/Dties6"])
    assert np.array_equal(ties, data["guided/onecycle/orderties6"])


def brute_force_walk(distances: np.ndarray) -> np.ndarray:
    """The farthest-neighbour walk as described: the farthest pair first (lowest indices on ties), then
    always the farthest image not yet visited, then back to the first."""
    batch = len(distances)
    pairs = [(distances[i, j], -i, -j) for i in range(batch) for j in range(batch) if i != j]
    _, first, current = max(pairs)
    first, current = -first, -current
    partner = {first: current}
    visited = [first, current]
    while len(visited) < batch:
        nxt = max((j for j in range(batch) if j not in visited), key=lambda j: (distances[current, j], -j))
        partner[current] = nxt
        visited.append(nxt)
        current = nxt
    partner[current] = first
    return np.array([partner[i] for i in range(batch)])


def is_single_cycle(partner: np.ndarray) -> bool:
    seen, node = set(), 0
    for _ in range(len(partner)):
        seen.add(node)
        node = int(partner[node])
    return node == 0 and len(seen) == len(partner)


@pytest.mark.parametrize("batch", [2, 3, 4, 5, 7, 9])
def test_greedy_pairing_is_a_single_cycle_equal_to_the_brute_force_walk(batch):
    for seed in range(5):
        x, y, saliency = smooth_batch(batch, seed=seed)
        maps = TF.gaussian_blur(saliency, [7, 7], [3.0, 3.0])
        maps = maps / maps.sum(dim=[-1, -2], keepdim=True)
        flat = maps.reshape(batch, -1).double().numpy()
        distances = np.sqrt(((flat[:, None] - flat[None]) ** 2).sum(-1))
        partner = brute_force_walk(distances)
        assert is_single_cycle(partner) and not np.any(partner == np.arange(batch))
        assert np.array_equal(guided.farthest_neighbour_cycle(guided.saliency_distances(maps)), partner)

        # the mixer pairs the same way; M and the label weights as defined
        mixed, mixed_y = GuidedMixupAP(mix_prob=1.0, rng=np.random.default_rng(seed))(x, y, saliency)
        ratio = maps / (maps + maps[partner])
        torch.testing.assert_close(mixed, ratio[:, None] * x + (1 - ratio[:, None]) * x[partner])
        weight = ratio.mean(dim=[-1, -2])[:, None]
        torch.testing.assert_close(mixed_y, weight * y + (1 - weight) * y[partner])
        own = (mixed_y * y).sum(1)  # distinct classes: the weight of each image's own class
        torch.testing.assert_close(own, ratio.mean(dim=[-1, -2]))


@pytest.mark.parametrize("variant", ["mix_greedy", "mix_released"])
def test_guided_mixing_reproduces_the_official_branch(variant):
    data = reference()
    x, _ = images()
    raw = torch.from_numpy(data["guided/mix/saliency_raw"])
    target = torch.from_numpy(data["guided/mix/target_onehot"])
    maps = guided.guided_saliency(raw)
    assert torch.equal(maps, torch.from_numpy(data["guided/mix/sc_blurnorm"]))
    if variant == "mix_greedy":
        distances = guided.saliency_distances(maps)
        assert torch.equal(distances, torch.from_numpy(data["guided/mix_greedy/D"]))
        partner = guided.farthest_neighbour_cycle(distances)
    else:  # the released code pairs by the permutation its pairing() draws last
        np.random.seed(int(data["guided/mix_released/np_seed"]))
        np.random.randint(1, 5)
        np.random.permutation(16)
        partner = np.random.permutation(16)
    assert np.array_equal(partner, data[f"guided/{variant}/indices"])
    mixed, mixed_y, ratio = guided.guided_mix(x, target, maps, partner)
    assert torch.equal(ratio, torch.from_numpy(data[f"guided/{variant}/M"]))
    assert torch.equal(ratio.mean(dim=[-1, -2]).unsqueeze(-1), torch.from_numpy(data[f"guided/{variant}/ratio"]))
    assert torch.equal(mixed, torch.from_numpy(data[f"guided/{variant}/mixed"]))
    assert torch.equal(mixed_y, torch.from_numpy(data[f"guided/{variant}/target"]))


def test_guided_mixers_reproduce_the_official_outputs_and_the_released_draw_order():
    data = reference()
    x, labels = images()
    raw = torch.from_numpy(data["guided/mix/saliency_raw"])
    mixed, mixed_y = GuidedMixupAP(mix_prob=1.0, num_classes=10)(x, labels, raw)
    assert torch.equal(mixed, torch.from_numpy(data["guided/mix_greedy/mixed"]))
    assert torch.equal(mixed_y, torch.from_numpy(data["guided/mix_greedy/target"]))

    for seed in (0, 7):
        np.random.seed(seed)
        mixed, mixed_y = GuidedMixupAP(mix_prob=0.8, pairing="random", num_classes=10)(x, labels, raw)
        np.random.seed(seed)
        if 0.8 < np.random.rand():  # main.py: this batch trains clean
            assert mixed is x
            continue
        np.random.randint(1, 5)
        np.random.permutation(16)
        partner = np.random.permutation(16)
        expected, expected_y, _ = guided.guided_mix(x, one_hot(labels), guided.guided_saliency(raw), partner)
        assert torch.equal(mixed, expected) and torch.equal(mixed_y, expected_y)


def official_spectral_residual(x: torch.Tensor) -> torch.Tensor:
    """The released SpectralResidual.transform_spectral_residual (kernel 3, blur 7, sigma 3), from its
    description, for images of at most 128 rows."""
    boxfilter = torch.nn.Conv2d(1, 1, 3, bias=False, padding=1, padding_mode="replicate")
    boxfilter.weight = torch.nn.Parameter(torch.ones((1, 1, 3, 3)) / 9.0, requires_grad=False)
    with torch.no_grad():
        freq = torch.fft.fft2(T.Grayscale(num_output_channels=1)(x))
        mag = (freq.real ** 2 + freq.imag ** 2 + 1e-10).sqrt()
        residual = (mag.log() - boxfilter(mag.log())).exp()
        freq.real = freq.real * residual / mag
        freq.imag = freq.imag * residual / mag
        saliency = torch.fft.ifft2(freq).squeeze(1)
        return TF.gaussian_blur((saliency.real ** 2 + saliency.imag ** 2).sqrt(), [7, 7], [3.0, 3.0])


def test_spectral_residual_follows_the_released_detector():
    data = reference()
    x, labels = images()
    saliency = guided.spectral_residual(x)
    assert torch.equal(saliency, official_spectral_residual(x))  # bit for bit on this machine
    # the stored maps came from another CPU, whose FFT rounds differently in the last bits
    torch.testing.assert_close(saliency, torch.from_numpy(data["guided/sr/saliency"]), rtol=1e-5, atol=1e-8)

    stored = torch.from_numpy(data["guided/sr/saliency"])
    maps = guided.guided_saliency(stored)  # blurred a second time, as released
    partner = guided.farthest_neighbour_cycle(guided.saliency_distances(maps))
    assert np.array_equal(partner, data["guided/sr_greedy/indices"])
    _, _, ratio = guided.guided_mix(x, one_hot(labels), maps, partner)
    assert torch.equal(ratio.mean(dim=[-1, -2]).unsqueeze(-1), torch.from_numpy(data["guided/sr_greedy/ratio"]))

    # from this machine's own maps: the same pairing, ratios within rounding
    own = guided.guided_saliency(saliency)
    own_partner = guided.farthest_neighbour_cycle(guided.saliency_distances(own))
    assert np.array_equal(own_partner, data["guided/sr_greedy/indices"])
    expected, expected_y, own_ratio = guided.guided_mix(x, one_hot(labels), own, own_partner)
    torch.testing.assert_close(own_ratio.mean(dim=[-1, -2]).unsqueeze(-1),
                               torch.from_numpy(data["guided/sr_greedy/ratio"]), rtol=0, atol=1e-6)
    mixed, mixed_y = GuidedMixupSR(mix_prob=1.0, num_classes=10)(x, labels)
    assert torch.equal(mixed, expected) and torch.equal(mixed_y, expected_y)


def test_spectral_residual_of_large_images_works_at_128_and_comes_back_full_size():
    x = torch.randn(2, 3, 160, 144, generator=torch.Generator().manual_seed(0))
    saliency = guided.spectral_residual(x)
    assert saliency.shape == (2, 160, 144) and bool((saliency >= 0).all())


def test_guided_mixing_without_saliency_shares_half_and_half():
    x, y, saliency = smooth_batch(4)
    mixed, mixed_y = GuidedMixupAP(mix_prob=1.0, rng=np.random.default_rng(0))(x, y, torch.zeros_like(saliency))
    assert bool(torch.isfinite(mixed).all())
    torch.testing.assert_close(mixed_y.max(1).values, torch.full((4,), 0.5))
    sparse = torch.zeros_like(saliency)
    sparse[:, :2, :2] = 1.0  # both maps are 0 far from the corner
    maps = guided.guided_saliency(sparse)
    _, _, ratio = guided.guided_mix(x, y, maps, np.array([1, 2, 3, 0]))
    assert bool(torch.isfinite(ratio).all()) and float(ratio[0, -1, -1]) == 0.5


def test_guided_mix_prob_decides_with_one_draw_and_decide_then_mix_matches_call():
    x, y, saliency = smooth_batch(6)
    mixer = GuidedMixupAP(mix_prob=0.0)
    np.random.seed(2)
    out_x, out_y = mixer(x, y, saliency)
    after = np.random.rand()
    np.random.seed(2)
    np.random.rand()
    assert out_x is x and torch.equal(out_y, y) and after == np.random.rand()

    for pairing in guided.PAIRINGS:
        called = GuidedMixupSR(mix_prob=0.5, pairing=pairing, rng=np.random.default_rng(4))(x, y)
        split = GuidedMixupSR(mix_prob=0.5, pairing=pairing, rng=np.random.default_rng(4))
        expected = split.mix(x, y) if split.decide() else (x, y)
        assert all(torch.equal(a, b) for a, b in zip(called, expected, strict=True))


# --------------------------------------------------------------------------- the door, shared by all four

def build(name: str, **extra):
    if name == "SaliencyMix":
        return SaliencyMix(mean=(0.5,), std=(0.25,), prob=1.0, **extra)
    if name == "GuidedMixupAP":
        return GuidedMixupAP(mix_prob=1.0, **extra)
    if name == "GuidedMixupSR":
        return GuidedMixupSR(mix_prob=1.0, **extra)
    return {"FMix": FMix, "ResizeMix": ResizeMix}[name](**extra)


NAMES = [pytest.param("SaliencyMix", marks=needs_detector), "FMix", "ResizeMix", "GuidedMixupAP", "GuidedMixupSR"]


def call(mixer, x, y, saliency):
    return mixer(x, y, saliency) if mixer.needs_saliency else mixer(x, y)


@pytest.mark.parametrize("name", NAMES)
def test_door_checks_labels_images_and_rng(name):
    x, y, saliency = smooth_batch(4)
    labels = y.argmax(1)
    with pytest.raises(ValueError, match="num_classes"):
        call(build(name), x, labels, saliency)
    with pytest.raises(ValueError, match="class index 4"):
        call(build(name, num_classes=4), x, labels + 1, saliency)
    with pytest.raises(TypeError, match="floating-point"):
        call(build(name, num_classes=4), (x * 50).clamp(0, 255).to(torch.uint8), labels, saliency)
    with pytest.raises(TypeError, match="rng"):
        build(name, rng=3)
    mixed, mixed_y = call(build(name, num_classes=4, rng=np.random.default_rng(0)), x, labels, saliency)
    assert mixed.dtype == x.dtype and mixed_y.dtype == torch.float32 and mixed_y.shape == (4, 4)
    torch.testing.assert_close(mixed_y.sum(1), torch.ones(4))
    _, soft_mixed_y = call(build(name, rng=np.random.default_rng(0)), x, y, saliency)
    torch.testing.assert_close(soft_mixed_y, mixed_y)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_mixed_images_keep_their_dtype(name, dtype):
    x, y, saliency = smooth_batch(4)
    mixed, mixed_y = call(build(name, rng=np.random.default_rng(1)), x.to(dtype), y, saliency)
    assert mixed.dtype == dtype and mixed_y.dtype == torch.float32 and bool(torch.isfinite(mixed).all())


def test_saliency_argument_is_required_by_ap_and_refused_by_sr():
    x, y, saliency = smooth_batch(4)
    assert GuidedMixupAP.needs_saliency and not GuidedMixupSR.needs_saliency
    with pytest.raises(TypeError):
        GuidedMixupAP()(x, y)
    with pytest.raises(ValueError, match="takes no saliency"):
        GuidedMixupSR()(x, y, saliency)
    for mixer in (FMix(), ResizeMix()):
        with pytest.raises(ValueError, match="takes no saliency"):
            mixer(x, y, saliency)


BAD_HYPERPARAMETERS = [
    (FMix, {"alpha": "1"}, TypeError, "alpha"),
    (FMix, {"alpha": 0.0}, ValueError, "alpha"),
    (FMix, {"decay_power": None}, TypeError, "decay_power"),
    (FMix, {"max_soft": 0.6}, ValueError, "max_soft"),
    (FMix, {"spectrum": "paper"}, ValueError, "spectrum"),
    (ResizeMix, {"scope": 0.5}, TypeError, "scope"),
    (ResizeMix, {"scope": (0.8, 0.1)}, ValueError, "scope"),
    (ResizeMix, {"scope": (0.1, 1.5)}, ValueError, "scope"),
    (ResizeMix, {"use_alpha": 1}, TypeError, "use_alpha"),
    (ResizeMix, {"alpha": -1.0}, ValueError, "alpha"),
    (GuidedMixupAP, {"mix_prob": 1.5}, ValueError, "mix_prob"),
    (GuidedMixupAP, {"pairing": "greedy_c"}, ValueError, "pairing"),
    (GuidedMixupSR, {"mix_prob": "0.5"}, TypeError, "mix_prob"),
    (GuidedMixupSR, {"num_classes": 0}, ValueError, "num_classes"),
]


@pytest.mark.parametrize("cls, kwargs, error, name", BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_are_refused_at_construction_in_one_line(cls, kwargs, error, name):
    with pytest.raises(error) as caught:
        cls(**kwargs)
    assert name in _one_line(caught.value)


@needs_detector
@pytest.mark.parametrize("kwargs, error, name", [
    ({"prob": True}, TypeError, "prob"),
    ({"beta": 0}, ValueError, "beta"),
    ({"detector_input": "float"}, ValueError, "detector_input"),
    ({"mean": "0.5"}, TypeError, "mean"),
    ({"mean": (float("nan"),)}, ValueError, "mean"),
    ({"std": (0.0,)}, ValueError, "std"),
    ({"mean": None}, ValueError, "mean"),
])
def test_saliencymix_bad_hyperparameters_are_refused_at_construction(kwargs, error, name):
    settings = {"mean": (0.5,), "std": (0.25,), **kwargs}
    with pytest.raises(error) as caught:
        SaliencyMix(**settings)
    assert name in _one_line(caught.value)


@pytest.mark.parametrize("cls", [FMix, ResizeMix, GuidedMixupAP, GuidedMixupSR])
def test_hyperparameters_are_keyword_only(cls):
    with pytest.raises(TypeError):
        cls(1.0)
