"""visualize.py: the figure shows what it says (inputs, saliency, mixes and their shares), the
command line reads both data layouts and checkpoints, and bad input is one error line, no file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comixup import models
from comixup.data.datasets import dataset_info
from comixup.data.synthetic import blob_saliency, write_cifar, write_image_folder
from comixup.mixing import baselines, comix, puzzlemix
from comixup.mixing.base import Mixer
from comixup.mixing.fmix import FMix
from comixup.mixing.guided import GuidedMixupAP, GuidedMixupSR, spectral_residual
from comixup.mixing.resizemix import ResizeMix
from comixup.mixing.saliencymix import SaliencyMix
from comixup.train import methods
from comixup.visualize import mixed_batch as visualize

pytestmark = pytest.mark.usefixtures("one_thread")
MEAN_STD = (dataset_info("cifar10").mean, dataset_info("cifar10").std)

CIFAR = dataset_info("cifar10")
SCALE = visualize.PANEL // 32  # screen pixels per CIFAR pixel in a panel


@pytest.fixture
def cifar_dir(tmp_path, cifar_no_md5):
    return write_cifar(tmp_path / "data", "cifar10", train_per_class=2, test_per_class=2)


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255


def panel(pixels: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = box
    return pixels[top:bottom, left:right]


def pixel_centres(crop: np.ndarray, size: int = 32) -> np.ndarray:
    """The screen pixel at the centre of each image pixel of a nearest-neighbour panel."""
    centres = np.arange(size) * SCALE + SCALE // 2
    return crop[np.ix_(centres, centres)]


def run_main(tmp_path: Path, data_dir: Path, *extra: str, out_name: str = "fig.png") -> tuple[int, Path]:
    out = tmp_path / "out" / out_name
    argv = ["--dataset", "cifar10", "--data_dir", str(data_dir), "--out", str(out), "--num_images", "4",
            "--initial_channels", "16", *extra]
    return visualize.main(argv), out


def tensors(batch: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    labels = torch.arange(batch)
    return x, labels, blob_saliency(batch, 32, seed)


# --------------------------------------------------------------------------- shares


def test_format_shares_lists_inputs_by_share_with_whole_percentages_summing_to_100():
    assert visualize.format_shares(np.array([0, 0.44, 0, 0, 0.56])) == "#5 56% · #2 44%"
    assert visualize.format_shares(np.array([1.0, 0.0])) == "#1 100%"
    thirds = visualize.format_shares(np.full(3, 1 / 3))
    assert thirds.replace("\n", " · ") == "#1 34% · #2 33% · #3 33%"
    assert thirds.count("\n") == 1  # two entries to a line
    assert visualize.format_shares(np.array([0.998, 0.002])) == "#1 100% · #2 <1%"
    with pytest.raises(ValueError, match="at least one input"):
        visualize.format_shares(np.zeros(3))


@pytest.mark.parametrize("method", visualize.METHODS)
def test_mix_batch_matches_each_method_and_its_shares_are_the_mixed_targets(method):
    x, labels, saliency = tensors(batch=6)
    result = visualize.mix_batch(method, x, labels, saliency, num_classes=6, rng=np.random.default_rng(5),
                                 mean=CIFAR.mean, std=CIFAR.std)
    # The reference: each module's own entry point with the same draws; distinct one-hot labels make
    # its mixed targets the share of each input in each output.
    onehot = comix.to_one_hot(labels, 6)
    rng = np.random.default_rng(5)
    if method == "comix":
        mixed, targets = comix.CoMixup(num_classes=6, rng=rng, m_part=6)(x, labels, saliency)
        assert result.grid_size == 4 and result.max_sources == 6
    elif method == "mixup":
        mixed, targets = baselines.input_mixup(x, onehot, alpha=1.0, rng=rng)
    elif method == "cutmix":
        mixed, targets = baselines.cutmix(x, onehot, alpha=1.0, rng=rng)
        assert result.box is not None
    elif method == "puzzle":
        mixed, targets = puzzlemix.PuzzleMix(mean=CIFAR.mean, std=CIFAR.std, rng=rng)(x, onehot, saliency)
        assert result.grid_size in puzzlemix.BLOCK_CHOICES
    elif method == "saliencymix":  # a figure always mixes: probability 1
        mixed, targets = SaliencyMix(prob=1.0, beta=1.0, mean=CIFAR.mean, std=CIFAR.std, rng=rng)(x, onehot)
        assert result.box is not None
    elif method == "fmix":
        mixed, targets = FMix(alpha=1.0, rng=rng)(x, onehot)
    elif method == "resizemix":
        mixed, targets = ResizeMix(rng=rng)(x, onehot)
        assert result.box is not None
    elif method == "guided_ap":
        mixed, targets = GuidedMixupAP(mix_prob=1.0, rng=rng)(x, onehot, saliency)
    else:
        assert method == "guided_sr"
        mixed, targets = GuidedMixupSR(mix_prob=1.0, rng=rng)(x, onehot)
        torch.testing.assert_close(result.saliency, spectral_residual(x))  # the maps it mixes by are drawn
    assert result.max_sources == (6 if method == "comix" else 2)
    torch.testing.assert_close(result.mixed, mixed)
    np.testing.assert_allclose(result.shares, targets.double().numpy(), atol=1e-6)
    np.testing.assert_allclose(result.shares.sum(1), 1, atol=1e-9)
    assert not torch.equal(result.mixed, x)


# --------------------------------------------------------------------------- the figure


def test_build_figure_draws_the_arrays_it_returns_at_the_panel_boxes(tmp_path):
    x, labels, saliency = tensors()
    mix = visualize.mix_batch("comix", x, labels, saliency, 4, np.random.default_rng(1))
    drawn = visualize.build_figure(x, saliency, mix, CIFAR.mean, CIFAR.std, title="a title",
                                   input_names=["a", "b", "c", "d"])
    assert drawn.title == "a title"
    assert drawn.size_px == visualize.figure_size_px(4, mix.max_sources, 1)
    np.testing.assert_allclose(drawn.inputs, visualize.denormalise(x, CIFAR.mean, CIFAR.std))
    np.testing.assert_allclose(drawn.outputs, visualize.denormalise(mix.mixed, CIFAR.mean, CIFAR.std))
    assert drawn.saliency.shape == (4, 32, 32) and np.allclose(drawn.saliency.max(axis=(1, 2)), 1)
    assert drawn.annotations == [visualize.format_shares(row) for row in mix.shares]
    assert np.abs(drawn.outputs - drawn.inputs).max() > 0.1  # the mix changed the images

    path = tmp_path / "fig.png"
    visualize.write_png(drawn.figure, path)
    pixels = read_png(path)
    assert pixels.shape[1::-1] == drawn.size_px
    for col in range(4):
        shown_input = pixel_centres(panel(pixels, drawn.panel_boxes[0][col]))
        shown_output = pixel_centres(panel(pixels, drawn.panel_boxes[2][col]))
        np.testing.assert_allclose(shown_input, drawn.inputs[col], atol=2 / 255)
        np.testing.assert_allclose(shown_output, drawn.outputs[col], atol=2 / 255)
        # The heat map is brightest where the saliency peaks.
        heat = pixel_centres(panel(pixels, drawn.panel_boxes[1][col])).sum(-1)
        peak = np.unravel_index(drawn.saliency[col].argmax(), (32, 32))
        assert heat[peak] == heat.max()
    rows = [np.stack([panel(pixels, box) for box in drawn.panel_boxes[row]]) for row in (0, 2)]
    assert np.abs(rows[0] - rows[1]).mean() > 0.05


def test_a_long_title_is_wrapped_inside_a_narrow_figure(tmp_path):
    x, labels, saliency = tensors(batch=2)
    mix = visualize.mix_batch("cutmix", x, labels, saliency, 2, np.random.default_rng(0))
    title = "CutMix on CIFAR-10 (images from some/folder), seed 0\n" + "saliency: " + "a very long name " * 8
    drawn = visualize.build_figure(x, saliency, mix, CIFAR.mean, CIFAR.std, title=title, grid=True)
    assert len(drawn.title.splitlines()) > 2
    assert drawn.title.replace("\n", " ").split() == title.split()
    width, height = drawn.size_px
    assert (width, height) == visualize.figure_size_px(2, 2, len(drawn.title.splitlines()))
    assert width == visualize.MIN_WIDTH
    path = tmp_path / "narrow.png"
    visualize.write_png(drawn.figure, path)
    pixels = read_png(path)
    title_band = pixels[: drawn.panel_boxes[0][0][1] - visualize.CAPTION]
    assert title_band.min() < 0.5  # the title is drawn...
    assert title_band[:, :4].min() > 0.9 and title_band[:, -4:].min() > 0.9  # ...and not cut at the sides


def test_build_figure_rejects_mismatched_inputs_and_a_grid_for_mixup():
    x, labels, saliency = tensors()
    mix = visualize.mix_batch("mixup", x, labels, saliency, 4, np.random.default_rng(1))
    with pytest.raises(ValueError, match="no mask grid"):
        visualize.build_figure(x, saliency, mix, CIFAR.mean, CIFAR.std, grid=True)
    with pytest.raises(ValueError, match="as many saliency maps"):
        visualize.build_figure(x, saliency[:3], mix, CIFAR.mean, CIFAR.std)


# --------------------------------------------------------------------------- the command line


def test_main_draws_a_cifar_batch_as_three_distinct_rows(tmp_path, cifar_dir, capsys):
    rc, out = run_main(tmp_path, cifar_dir)
    assert rc == 0, capsys.readouterr().err
    assert f"wrote {out}" in capsys.readouterr().out
    pixels = read_png(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["fig.png"]  # no temporary file left
    args = visualize.get_args_parser().parse_args(["--dataset", "cifar10", "--data_dir", str(cifar_dir),
                                                   "--num_images", "4", "--initial_channels", "16"])
    drawn = visualize.make_figure(args).figure
    assert "fresh model" in drawn.title and "CIFAR-10" in drawn.title
    # Co-Mixup of 4 inputs: at most 4 per output.
    width, height = visualize.figure_size_px(4, 4, len(drawn.title.splitlines()))
    assert pixels.shape == (height, width, 3) and drawn.size_px == (width, height)
    inputs = np.stack([panel(pixels, box) for box in drawn.panel_boxes[0]])
    outputs = np.stack([panel(pixels, box) for box in drawn.panel_boxes[2]])
    assert np.abs(inputs - outputs).mean() > 0.02


def test_same_seed_same_figure_and_grid_draws_only_on_the_outputs(tmp_path, cifar_dir):
    assert run_main(tmp_path, cifar_dir, out_name="a.png")[0] == 0
    assert run_main(tmp_path, cifar_dir, out_name="b.png")[0] == 0
    assert run_main(tmp_path, cifar_dir, "--grid", out_name="grid.png")[0] == 0
    assert run_main(tmp_path, cifar_dir, "--seed", "1", out_name="seed1.png")[0] == 0
    a, b, grid, seed1 = (read_png(tmp_path / "out" / name) for name in ("a.png", "b.png", "grid.png", "seed1.png"))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, seed1)
    args = visualize.get_args_parser().parse_args(["--dataset", "cifar10", "--data_dir", str(cifar_dir),
                                                   "--num_images", "4", "--initial_channels", "16"])
    output_row_top = visualize.make_figure(args).figure.panel_boxes[2][0][1]
    assert np.array_equal(a[:output_row_top], grid[:output_row_top])
    assert not np.array_equal(a[output_row_top:], grid[output_row_top:])


def test_the_batch_takes_distinct_classes_first(cifar_dir):
    args = visualize.get_args_parser().parse_args(["--dataset", "cifar10", "--data_dir", str(cifar_dir),
                                                   "--num_images", "10", "--initial_channels", "16"])
    assert sorted(visualize.make_figure(args).labels.tolist()) == list(range(10))


def test_split_train_reads_the_training_images(tmp_path, cifar_dir):
    base = ["--dataset", "cifar10", "--data_dir", str(cifar_dir), "--num_images", "4", "--initial_channels", "16"]
    test_images = visualize.make_figure(visualize.get_args_parser().parse_args(base)).images
    train_images = visualize.make_figure(visualize.get_args_parser().parse_args(base + ["--split", "train"])).images
    assert train_images.shape == test_images.shape and not torch.equal(train_images, test_images)


@pytest.mark.parametrize("method", ["mixup", "cutmix", "puzzle"])
def test_baseline_methods_annotate_pairs(tmp_path, cifar_dir, method):
    args = visualize.get_args_parser().parse_args(
        ["--dataset", "cifar10", "--data_dir", str(cifar_dir), "--num_images", "4", "--initial_channels", "16",
         "--method", method] + (["--grid"] if method != "mixup" else []))
    drawn = visualize.make_figure(args)
    assert drawn.mix.method == method
    assert all(1 <= text.count("#") <= 2 for text in drawn.figure.annotations)
    assert drawn.figure.size_px == visualize.figure_size_px(4, 2, len(drawn.figure.title.splitlines()))
    assert methods.REGISTRY[method].title in drawn.figure.title


class _RollMixer(Mixer):
    """A toy mixer: output i is image i + 1 (cyclically), flipped left to right."""

    def __call__(self, x, y, saliency=None):
        x, targets, _ = self._door(x, y, saliency)
        order = torch.roll(torch.arange(x.shape[0]), -1)
        return x[order].flip(-1), targets[order]


class _RollMethod(methods.VanillaMethod):
    name, title = "roll", "Roll and flip"
    published_mixup_alpha = 1.0

    @classmethod
    def figure_mixer(cls, batch, settings):
        return _RollMixer(rng=settings.rng)


def test_a_registered_method_is_drawn_with_its_own_mixing(tmp_path, cifar_dir, monkeypatch):
    """visualize.py takes its methods and their mixing from the registry: a method registered later is
    offered and drawn with its own mixing, never another method's."""
    monkeypatch.setitem(methods.REGISTRY, "roll", _RollMethod)
    assert _RollMethod.drawable and "roll" in visualize.drawable_methods()
    out = tmp_path / "roll.png"
    args = visualize.get_args_parser().parse_args(
        ["--dataset", "cifar10", "--data_dir", str(cifar_dir), "--num_images", "4", "--initial_channels", "16",
         "--method", "roll", "--out", str(out)])
    drawn = visualize.make_figure(args)
    expected = torch.roll(drawn.images, -1, dims=0).flip(-1)
    assert torch.equal(drawn.mix.mixed, expected)
    assert np.array_equal(drawn.figure.outputs, visualize.denormalise(expected, *MEAN_STD))
    assert drawn.figure.annotations == ["#2 100%", "#3 100%", "#4 100%", "#1 100%"]
    assert "Roll and flip" in drawn.figure.title
    with pytest.raises(ValueError, match="does not mix the input images"):
        methods.ManifoldMixMethod.draw_mix(drawn.images, drawn.labels, drawn.saliency, methods.FigureSettings(
            num_classes=10, rng=np.random.default_rng(0)))


@pytest.mark.parametrize("method, extra", [
    ("saliencymix", ["--grid", "--salmix_detector_input", "normalised"]),
    ("fmix", ["--fmix_spectrum", "published", "--mixup_alpha", "0.5"]),
    ("resizemix", ["--grid", "--resizemix_use_alpha", "True", "--resizemix_scope", "0.3", "0.6"]),
    ("guided_ap", ["--guided_pairing", "random"]),
    ("guided_sr", []),
])
def test_the_successors_are_drawn_with_their_options(tmp_path, cifar_dir, capsys, method, extra):
    rc, out = run_main(tmp_path, cifar_dir, "--method", method, *extra)
    assert rc == 0, capsys.readouterr().err
    args = visualize.get_args_parser().parse_args(["--dataset", "cifar10", "--data_dir", str(cifar_dir),
                                                   "--num_images", "4", "--initial_channels", "16",
                                                   "--method", method, *extra])
    drawn = visualize.make_figure(args)
    title_lines = len(drawn.figure.title.splitlines())
    # every output draws from itself and one partner: two sources, one annotation line
    assert drawn.mix.max_sources == 2 and all(1 <= text.count("#") <= 2 for text in drawn.figure.annotations)
    assert read_png(out).shape[:2] == visualize.figure_size_px(4, 2, title_lines)[::-1]
    assert drawn.figure.title.startswith(methods.REGISTRY[method].title + " on CIFAR-10")
    options = [flag for flag in extra if flag.startswith("--") and flag not in ("--grid", "--mixup_alpha")]
    assert all(flag in drawn.figure.title for flag in options)
    assert ("alpha 0.5" in drawn.figure.title) == (method == "fmix")
    assert not torch.equal(drawn.mix.mixed, drawn.images)  # a figure always mixes
    np.testing.assert_allclose(drawn.mix.shares.sum(1), 1, atol=1e-9)
    if "--grid" in extra:
        assert drawn.mix.box is not None
    else:
        rc, _ = run_main(tmp_path, cifar_dir, "--method", method, "--grid", *extra, out_name="grid.png")
        assert rc == 2 and "has no mask grid or box to outline" in error_line(capsys)
    if method == "guided_sr":  # row 2 shows the spectral residual it mixes by
        torch.testing.assert_close(drawn.saliency, spectral_residual(drawn.images))
        assert "saliency: spectral residual" in drawn.figure.title


def test_an_image_folder_of_the_datasets_size_is_read_with_its_normalisation(tmp_path, capsys):
    root = write_image_folder(tmp_path / "folder", num_classes=3, per_class=3, size=32, splits=("test",))
    rc, out = run_main(tmp_path, root / "test")
    assert rc == 0, capsys.readouterr().err
    args = visualize.get_args_parser().parse_args(["--dataset", "cifar10", "--data_dir", str(root / "test"),
                                                   "--num_images", "4", "--initial_channels", "16"])
    vis = visualize.make_figure(args)
    assert read_png(out).shape[:2] == vis.figure.size_px[::-1]
    assert "images from folder/test" in vis.figure.title
    # The panels show the files' own pixels: the normalisation is undone exactly.
    files = {p.parent.name + "/" + p.name: np.asarray(Image.open(p), dtype=np.float64) / 255
             for p in (root / "test").rglob("*.png")}
    for shown, name in zip(vis.figure.inputs, [f"class{int(label)}" for label in vis.labels], strict=True):
        assert any(np.abs(shown - img).max() < 1e-5 for key, img in files.items() if key.startswith(name + "/"))
    assert len(set(vis.labels.tolist())) == 3  # distinct classes first


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_bad_data_dir_is_one_error_line_and_no_file(tmp_path, capsys):
    rc, out = run_main(tmp_path, tmp_path / "missing")
    assert rc == 2
    assert "no such folder" in error_line(capsys)
    assert not out.parent.exists() or not any(out.parent.iterdir())

    root = write_image_folder(tmp_path / "splits", num_classes=2, per_class=3, size=32, splits=("test",))
    rc, out = run_main(tmp_path, root)  # a folder of splits, not an ImageFolder
    assert rc == 2
    assert f"did you mean --data_dir {root / 'test'}" in error_line(capsys)

    big = write_image_folder(tmp_path / "big", num_classes=2, per_class=3, size=64, splits=("val",))
    rc, out = run_main(tmp_path, big / "val")
    assert rc == 2
    assert "3x64x64" in error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--arch", "resnet7"], "invalid choice"),
    (["--num_images", "1"], "--num_images"),
    (["--method", "mixup", "--grid"], "no mask grid"),
    (["--method", "cutmix", "--m_beta", "0.5"], "--m_beta applies only to --method comix"),
    (["--method", "cutmix", "--fmix_spectrum", "published"], "--fmix_spectrum applies only to --method fmix"),
    (["--method", "guided_ap", "--mixup_alpha", "1"], "--method guided_ap draws no mixing weight"),
    (["--method", "fmix", "--fmix_max_soft", "0.9"], "--fmix_max_soft must be"),
    (["--m_block_num", "5"], "does not divide"),
    (["--out", "figure.jpg"], ".png"),
    (["--split", "train"], "single ImageFolder"),
])
def test_bad_arguments_are_one_error_line_and_no_file(tmp_path, capsys, extra, message):
    root = write_image_folder(tmp_path / "folder", num_classes=2, per_class=3, size=32, splits=("test",))
    rc, out = run_main(tmp_path, root / "test", *extra)
    assert rc == 2
    assert message in error_line(capsys)
    assert not out.exists()


def tiny_checkpoint(path: Path, seed: int = 3, **extra) -> models.MixableClassifier:
    torch.manual_seed(seed)
    model = models.build_model("preactresnet18", 10, initial_channels=16)
    torch.save({"state_dict": model.state_dict(), "arch": "preactresnet18", **extra}, path)
    return model


def test_resume_takes_the_saliency_from_the_checkpoints_model(tmp_path, cifar_dir, capsys):
    checkpoint = tmp_path / "tiny.pth.tar"
    model = tiny_checkpoint(checkpoint)
    base = ["--dataset", "cifar10", "--data_dir", str(cifar_dir), "--num_images", "4"]
    # No --initial_channels: the width comes from the checkpoint.
    vis = visualize.make_figure(visualize.get_args_parser().parse_args(base + ["--resume", str(checkpoint)]))
    assert "tiny.pth.tar" in vis.figure.title and "fresh model" not in vis.figure.title
    expected, _, _ = comix.saliency_and_clean_loss(model.eval(), vis.images, vis.labels, clean_lam=0.0)
    torch.testing.assert_close(vis.saliency, expected)
    fresh = visualize.make_figure(visualize.get_args_parser().parse_args(base + ["--initial_channels", "16"]))
    assert torch.equal(fresh.images, vis.images) and not torch.allclose(fresh.saliency, vis.saliency)

    rc, out = run_main(tmp_path, cifar_dir, "--resume", str(checkpoint))
    assert rc == 0, capsys.readouterr().err
    assert out.is_file()


@pytest.mark.parametrize("extra, message", [
    (["--initial_channels", "64"], "holds a preactresnet18 of width 16 but this run asks for --initial_channels 64"),
    (["--arch", "wrn28_2"], "holds a preactresnet18"),
])
def test_a_checkpoint_that_does_not_fit_is_one_error_line(tmp_path, cifar_dir, capsys, extra, message):
    checkpoint = tmp_path / "tiny.pth.tar"
    tiny_checkpoint(checkpoint)
    out = tmp_path / "out" / "fig.png"
    argv = ["--dataset", "cifar10", "--data_dir", str(cifar_dir), "--num_images", "4", "--out", str(out),
            "--resume", str(checkpoint), *extra]
    assert visualize.main(argv) == 2
    assert message in error_line(capsys)
    assert not out.exists()


def test_unreadable_or_foreign_checkpoints_are_one_error_line(tmp_path, cifar_dir, capsys):
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(b"not a checkpoint")
    assert run_main(tmp_path, cifar_dir, "--resume", str(garbage))[0] == 2
    assert "cannot read checkpoint" in error_line(capsys)
    other = tmp_path / "cifar100.pth.tar"
    tiny_checkpoint(other, dataset="cifar100")
    assert run_main(tmp_path, cifar_dir, "--resume", str(other))[0] == 2
    assert "trained on cifar100" in error_line(capsys)
