"""localization.py and its modules: CAM, boxes, IoU and metrics on a model whose CAM is known, the
three data formats, the corrupted sets, published checkpoints and pickles, tables, figure, bad input."""
from __future__ import annotations

import dataclasses
import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from comixup import models
from comixup.data.synthetic import write_image_folder as write_class_folder
from comixup.localization import evaluate as localization
from comixup.localization.cam import NO_BOX, LocalizationScores, box_from_gray, box_iou, class_activation_maps, to_gray
from comixup.localization.corrupt import Corruption, background_mask, build_corrupted_set
from comixup.localization.datasets import (
    CroppedSet,
    FolderSet,
    PickleSet,
    _LazyArray,
    _Payload,
    boxes_in_crop,
    center_crop,
    read_restricted_pickle,
)
from comixup.localization.report import FORMULA_ONLY_NOTE, tables_markdown, tables_text

import main as train_main
from tests.support.runs import assert_one_error_line
from tests.support.wsol_fakes import (
    CROP,
    FAKE_SET,
    RED,
    ColourCAMNet,
    images_and_boxes,
    write_box_csv,
    write_box_xml,
    write_image_folder,
    write_pickles,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SWEEP = np.arange(0.0, 1.0, 0.01)
# ColourCAMNet on FAKE_SET: image 3 is misclassified (its CAM still finds the object), image 4's
# GT box lies where there is no object (apart on both axes from the found one)
EXPECTED = {"images": 6, "top1": 500 / 6, "top5": 100.0, "top1_loc": 400 / 6, "gt_known_loc": 500 / 6,
            "max_box_acc": 500 / 6, "top1_loc_correct_iou": 400 / 6, "top1_loc_published_iou": 500 / 6}


def evaluate_known(source, iou: str = "correct", published_boxes: bool = False) -> dict:
    dataset = CroppedSet(source, CROP, 0, published_boxes)
    return localization.evaluate(ColourCAMNet().eval(), dataset, LocalizationScores(0.25, SWEEP, iou),
                                 torch.device("cpu"), localization.Throughput(batch_size=4))


def assert_metrics(summary: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value), key


# ------------------------------------------------------------------------------------------------
# IoU, boxes, CAM
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, correct, published", [
    ((0, 0, 10, 10), (20, 20, 30, 30), 0.0, 1.0),             # apart on both axes: the published "hit"
    ((0, 0, 10, 10), (20, 0, 30, 10), 0.0, -10 / 30),         # apart on one axis
    ((0, 0, 10, 10), (10, 0, 20, 10), 0.0, 0.0),              # touching
    ((0, 0, 10, 10), (0, 0, 10, 10), 1.0, 1.0),               # identical
    ((0, 0, 20, 20), (5, 5, 15, 15), 0.25, 0.25),             # nested
    ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150, 50 / 150),     # half overlap
])
def test_iou(a, b, correct, published):
    assert box_iou(np.array([a]), np.array([b]))[0, 0] == pytest.approx(correct)
    assert box_iou(np.array([a]), np.array([b]), published=True)[0, 0] == pytest.approx(published)


def test_iou_degenerate_boxes():
    point = np.array([[5, 5, 5, 5]])
    assert box_iou(point, point)[0, 0] == 0.0  # union 0: defined as 0
    assert np.isnan(box_iou(point, point, published=True)[0, 0])  # the published 0 / 0
    inverted = np.array([[10, 10, 0, 0]])
    assert box_iou(inverted, np.array([[0, 0, 10, 10]]))[0, 0] == 0.0
    assert box_iou(np.zeros((0, 4)), np.zeros((2, 4))).shape == (0, 2)


def test_box_is_the_larger_of_two_blobs():
    gray = np.zeros((56, 56), dtype=np.uint8)
    gray[5:15, 40:52] = 255  # 10 x 12, the brightest
    gray[30:50, 6:30] = 200  # 20 x 24, the largest
    gray[0:2, 0:2] = 40  # below the threshold
    assert box_from_gray(gray, 0.25) == (6.0, 30.0, 30.0, 50.0)
    assert box_from_gray(gray, 0.9) == (40.0, 5.0, 52.0, 15.0)  # only the brightest left


def test_box_is_the_published_contour_tree_box():
    """The published recipe: cv2.threshold at int(th x max), the whole contour tree, the largest
    contour's bounding rectangle; random CAMs with several blobs and holes."""
    g = torch.Generator().manual_seed(1)
    features = torch.rand(20, 16, 7, 7, generator=g) ** 3
    gray = to_gray(class_activation_maps(features, torch.randn(1, 16, generator=g), torch.zeros(20, dtype=torch.long),
                                         (112, 112))).numpy()
    for cam in gray:
        for th in (0.25, 0.5, 0.75):
            _, mask = cv2.threshold(cam, int(th * cam.max()), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
            x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
            assert box_from_gray(cam, th) == (x, y, x + w, y + h)


def test_flat_cam_is_defined():
    features = torch.zeros(2, 4, 7, 7)
    cams = class_activation_maps(features, torch.randn(3, 4), torch.tensor([0, 2]), (56, 56))
    assert cams.shape == (2, 56, 56) and not torch.isnan(cams).any() and cams.abs().max() == 0
    gray = to_gray(cams).numpy()
    assert box_from_gray(gray[0], 0.25) == NO_BOX
    scores = LocalizationScores(0.25, SWEEP)
    scores.add(True, True, gray[0], np.array([[0.0, 0.0, 56.0, 56.0]]))
    summary = scores.summary()
    assert not any(isinstance(v, float) and np.isnan(v) for v in summary.values())
    assert summary["top1_loc"] == 0.0 and summary["top1"] == 100.0


def test_cam_is_the_published_recipe():
    """fc weights x features, summed over channels, 3x3 box sum, bicubic, min-max: written out the
    published way (a C-channel box filter over weighted features) for comparison."""
    g = torch.Generator().manual_seed(0)
    features = torch.rand(3, 8, 7, 7, generator=g)
    weight = torch.randn(5, 8, generator=g)
    classes = torch.tensor([4, 0, 2])
    cams = class_activation_maps(features, weight, classes, (224, 224))
    for k in range(3):
        weighted = weight[classes[k]][None, :, None, None] * features[k:k + 1]
        cam = F.conv2d(weighted, torch.ones(1, 8, 3, 3), padding=1)
        cam = F.interpolate(cam, size=[224, 224], mode="bicubic")
        cam = (cam - cam.min()) / (cam.max() - cam.min())
        torch.testing.assert_close(cams[k], cam[0, 0], atol=1e-5, rtol=0)


def test_published_iou_counts_a_miss_as_a_hit():
    gray = np.zeros((56, 56), dtype=np.uint8)
    gray[4:14, 4:14] = 255  # box (4, 4, 14, 14)
    gt = np.array([[24.0, 24.0, 34.0, 34.0]])  # apart by 10 on both axes
    for mode, hit in (("correct", 0.0), ("published", 100.0)):
        scores = LocalizationScores(0.25, SWEEP, mode)
        scores.add(True, True, gray, gt)
        assert scores.summary()["top1_loc"] == hit
        assert scores.summary()["top1_loc_published_iou"] == 100.0


def test_threshold_zero_keeps_every_lit_pixel():
    gray = np.zeros((20, 20), dtype=np.uint8)
    gray[2:6, 3:9] = 200
    gray[12:18, 10:19] = 1  # the larger blob, kept only at th 0: pixels strictly above int(0 x 200) = 0
    assert box_from_gray(gray, 0.0) == (10.0, 12.0, 19.0, 18.0)
    assert box_from_gray(gray, 0.25) == (3.0, 2.0, 9.0, 6.0)


# ------------------------------------------------------------------------------------------------
# Centre crop and GT boxes in crop pixels
# ------------------------------------------------------------------------------------------------

def marked_box(image_chw: torch.Tensor) -> tuple[float, float, float, float]:
    """Pixel edges (x0, y0, x1, y1) of the pixels whose first channel is 255."""
    ys, xs = torch.nonzero(image_chw[0] == 255, as_tuple=True)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


@pytest.mark.parametrize("crop", [8, 9])
def test_center_crop_is_torchvisions(crop):
    """Pixels and GT boxes as torchvision's CenterCrop: every height and width from crop - 3 to
    crop + 3 (padding of 1, 2, 3 pixels, odd and even differences); the GT box, a rectangle
    marked in the image, must lie where the crop shows it."""
    import torchvision.transforms.functional as TF

    rng = np.random.default_rng(crop)
    for height in range(crop - 3, crop + 4):
        for width in range(crop - 3, crop + 4):
            image = rng.integers(0, 200, (height, width, 3), dtype=np.uint8)
            x0, y0, x1, y1 = 1, 1, width - 1, height - 1  # cut by the crop where the image is larger
            image[y0:y1, x0:x1, 0] = 255
            expected = TF.center_crop(torch.from_numpy(image).permute(2, 0, 1), [crop, crop])
            cropped = center_crop(image, crop)
            assert cropped.shape == (crop, crop, 3), (height, width)
            np.testing.assert_array_equal(cropped.transpose(2, 0, 1), expected.numpy(), err_msg=f"{height}x{width}")
            normalised = np.array([[x0 / width, y0 / height, x1 / width, y1 / height]])
            np.testing.assert_allclose(boxes_in_crop(normalised, height, width, crop)[0], marked_box(expected),
                                       atol=1e-9, err_msg=f"{height}x{width}")


def test_images_around_the_crop_size_evaluate_in_batches(tmp_path):
    """Stored images of 223, 224 and 225 pixels a side (every combination), four per batch, cropped
    to 224: each item is torchvision's CenterCrop of its image, the GT box is where the object
    lies in the crop, and the evaluation completes and finds every object."""
    import torchvision.transforms.functional as TF

    images, boxes = [], []
    for k, (height, width) in enumerate([(h, w) for h in (223, 224, 225) for w in (223, 224, 225)]):
        image = np.full((height, width, 3), 128, dtype=np.uint8)
        x0, y0 = 40 + 7 * k, 60 + 5 * k
        image[y0:y0 + 70, x0:x0 + 90] = RED
        images.append(image)
        boxes.append(np.array([[x0 / width, y0 / height, (x0 + 90) / width, (y0 + 70) / height]], dtype=np.float32))
    folder = tmp_path / "sizes"
    folder.mkdir()
    for name, obj in (("input.pkl", images), ("label.pkl", [0] * len(images)), ("bbox.pkl", boxes)):
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=4)
    dataset = CroppedSet(PickleSet(folder), 224)
    for k, image in enumerate(images):
        tensor, _label, gt, _index = dataset[k]
        expected = TF.center_crop(torch.from_numpy(image).permute(2, 0, 1), [224, 224])
        torch.testing.assert_close(tensor, expected, rtol=0, atol=0)
        red = (expected[0] == RED[0]) & (expected[2] == RED[2])
        ys, xs = torch.nonzero(red, as_tuple=True)
        np.testing.assert_allclose(gt[0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1e-4)
    summary = localization.evaluate(ColourCAMNet().eval(), dataset, LocalizationScores(0.25, SWEEP),
                                    torch.device("cpu"), localization.Throughput(batch_size=4))
    assert summary["images"] == 9 and summary["top1_loc"] == 100.0


def published_crop_boxes(boxes: np.ndarray, height: int, width: int, crop: int) -> np.ndarray:
    """The published GT box arithmetic on float32 boxes, every step rounded to float32 explicitly."""
    f32 = np.float32
    out = np.empty(boxes.shape, dtype=np.int32)
    for i, row in enumerate(boxes):
        for j, side in enumerate((width, height, width, height)):
            off = f32((side - crop) / 2)
            pixel = f32(f32(row[j]) * f32(side))
            out[i, j] = int(f32(min(max(pixel, off), f32(side) - off) - off))
    return out.astype(np.float64)


def test_published_boxes_are_computed_in_the_stored_dtype(tmp_path):
    """float32 boxes at exact fractions k / side of a 300 x 260 image: the published code multiplies
    in float32, where some products round up to k and their float64 counterparts truncate to k - 1."""
    height, width, crop = 260, 300, 224
    xs = np.arange(width) / width
    ys = np.arange(width) % height / height
    boxes = np.stack([xs, ys, np.minimum(xs + 1 / width, 1), np.minimum(ys + 1 / height, 1)], axis=1).astype(np.float32)
    folder = tmp_path / "float32"
    folder.mkdir()
    for name, obj in (("input.pkl", [np.zeros((height, width, 3), dtype=np.uint8)]), ("label.pkl", [0]),
                      ("bbox.pkl", [boxes])):
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=4)
    source = PickleSet(folder)
    assert source.sample(0).boxes.dtype == np.float32
    published = CroppedSet(source, crop, published_boxes=True)[0][2]
    np.testing.assert_array_equal(published, published_crop_boxes(boxes, height, width, crop))
    in_float64 = boxes_in_crop(boxes.astype(np.float64), height, width, crop, published=True)
    assert (published != in_float64).sum() > 10  # the dtype matters on these boxes
    assert published.dtype == np.float64 and np.all(published == np.round(published))


# ------------------------------------------------------------------------------------------------
# Metrics on a model whose CAM is known, in every data format
# ------------------------------------------------------------------------------------------------

def test_known_cam_metrics(tmp_path):
    summary = evaluate_known(PickleSet(write_pickles(tmp_path / "clean")))
    assert_metrics(summary, EXPECTED)
    published = evaluate_known(PickleSet(tmp_path / "clean"), iou="published", published_boxes=True)
    assert published["top1_loc"] == pytest.approx(500 / 6)  # image 4's miss counted as a hit
    assert published["top1"] == summary["top1"]


def test_formats_agree(tmp_path):
    folder = write_image_folder(tmp_path / "val")
    from_csv = evaluate_known(FolderSet(folder, write_box_csv(tmp_path / "LOC_val_solution.csv")))
    from_xml = evaluate_known(FolderSet(folder, write_box_xml(tmp_path / "xml")))
    assert_metrics(from_csv, EXPECTED)
    assert_metrics(from_xml, EXPECTED)


def test_flat_validation_folder_takes_classes_from_the_boxes(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "val", flat=True)
    source = FolderSet(folder, write_box_csv(tmp_path / "LOC_val_solution.csv"))
    assert source.flat and source.classes == ["n00000001", "n00000002"]
    assert_metrics(evaluate_known(source), EXPECTED)
    only_red = [fake for fake in FAKE_SET if fake.label == 0]
    subset = write_image_folder(tmp_path / "subset", only_red, flat=True)
    write_published_pt(tmp_path / "pretrained" / "vanilla.pt")
    argv = ["--data", str(subset), "--boxes", str(write_box_csv(tmp_path / "red.csv", only_red)),
            "--pretrained_dir", str(tmp_path / "pretrained"), "--num_classes", "2", "--root_dir", str(tmp_path / "r")]
    assert localization.main(argv) == 2
    assert_one_error_line(capsys, "names 1 classes, not 2", "class folders")


def test_folder_boxes_are_normalised_by_the_image_size(tmp_path):
    folder = write_image_folder(tmp_path / "val")
    source = FolderSet(folder, write_box_csv(tmp_path / "boxes.csv"))
    _, _, expected_boxes = images_and_boxes()
    # FolderSet sorts by class folder, then file name: map back through the image ids
    for index, (path, _label) in enumerate(source.items):
        original = int(path.stem.rsplit("_", 1)[1]) - 1
        np.testing.assert_allclose(source.sample(index).boxes, expected_boxes[original])
        assert source.sample(index).label == FAKE_SET[original].label


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickles_of_any_protocol_read_lazily(tmp_path, protocol):
    images = [np.random.default_rng(k).integers(0, 256, (h, w, 3), dtype=np.uint8)
              for k, (h, w) in enumerate([(64, 64), (200, 150), (8, 8)])]
    with open(tmp_path / "input.pkl", "wb") as f:
        pickle.dump(images, f, protocol=protocol)
    lazy = read_restricted_pickle(tmp_path / "input.pkl")
    assert all(isinstance(item, _LazyArray) for item in lazy)
    for item, image in zip(lazy, images, strict=True):
        np.testing.assert_array_equal(item.load(tmp_path / "input.pkl"), image)
    if protocol in (3, 4, 5):  # bytes payloads outside frames stay on disk until read
        assert isinstance(lazy[1].data, _Payload)


def test_stacked_image_array_and_numpy_labels(tmp_path):
    images, labels, boxes = images_and_boxes()
    folder = tmp_path / "stacked"
    folder.mkdir()
    for name, obj in (("input.pkl", np.stack(images)), ("label.pkl", np.asarray(labels)), ("bbox.pkl", boxes)):
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=4)
    source = PickleSet(folder)
    np.testing.assert_array_equal(source.sample(3).image, images[3])
    assert_metrics(evaluate_known(source), EXPECTED)


def test_pickle_with_other_objects_is_refused(tmp_path, capsys):
    folder = write_pickles(tmp_path / "data" / "clean")
    with open(folder / "label.pkl", "wb") as f:
        pickle.dump([Path("/etc/passwd")], f)
    assert localization.main(["--data", str(folder), "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert_one_error_line(capsys, "label.pkl", "refusing to unpickle")


# ------------------------------------------------------------------------------------------------
# Corrupted sets
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["noise", "rep"])
def test_corrupted_sets_keep_the_boxes(tmp_path, kind):
    folder = write_image_folder(tmp_path / "val")
    source = FolderSet(folder, write_box_csv(tmp_path / "boxes.csv"))
    out = build_corrupted_set(source, Corruption(kind, seed=3, resize=0), tmp_path / kind)
    again = build_corrupted_set(source, Corruption(kind, seed=3, resize=0), tmp_path / f"{kind}-again")
    other_seed = build_corrupted_set(source, Corruption(kind, seed=4, resize=0), tmp_path / f"{kind}-seed4")
    assert (out / "input.pkl").read_bytes() == (again / "input.pkl").read_bytes()
    assert (out / "input.pkl").read_bytes() != (other_seed / "input.pkl").read_bytes()
    corrupted = PickleSet(out)
    np.testing.assert_array_equal(corrupted.labels, source.labels)
    for index in range(len(source)):
        clean, bad = source.sample(index), corrupted.sample(index)
        assert bad.boxes.dtype == np.float32  # as build writes them, kept for --iou published
        np.testing.assert_allclose(bad.boxes, clean.boxes, atol=1e-6)
        height, width = clean.image.shape[:2]
        for x0, y0, x1, y1 in clean.boxes:
            inside = np.s_[int(y0 * height):int(np.ceil(y1 * height)), int(x0 * width):int(np.ceil(x1 * width))]
            np.testing.assert_array_equal(bad.image[inside], clean.image[inside])
        background = background_mask(height, width, clean.boxes)
        changed = (bad.image != clean.image).any(axis=2)
        assert not changed[~background].any()
        assert changed[background].mean() > 0.8
        if kind == "rep":  # the background comes from an image of the other class
            donors = [source.sample(j).image for j in range(len(source)) if source.labels[j] != clean.label]
            assert any((bad.image[background] == d[background]).all() for d in donors)
    assert not list(tmp_path.glob(".*.tmp"))


def test_robustness_evaluation_on_a_built_set(tmp_path):
    source = PickleSet(write_pickles(tmp_path / "clean"))
    faint = PickleSet(build_corrupted_set(source, Corruption("noise", noise_std=5.0, resize=0), tmp_path / "faint"))
    assert_metrics(evaluate_known(faint), EXPECTED)  # below the model's colour threshold: nothing changes
    strong = PickleSet(build_corrupted_set(source, Corruption("noise", noise_std=60.0, resize=0), tmp_path / "strong"))
    summary = evaluate_known(strong)  # coloured noise on the background misleads the colour classifier
    assert summary["images"] == 6 and summary["top1"] < EXPECTED["top1"]


def test_build_command_refuses_an_existing_folder(tmp_path, capsys):
    source = write_pickles(tmp_path / "clean")
    argv = ["build", "--data", str(source), "--kind", "noise", "--out", str(tmp_path / "noise"), "--resize", "0"]
    assert localization.main(argv) == 0
    capsys.readouterr()
    assert localization.main(argv) == 2
    assert_one_error_line(capsys, "exists")


# ------------------------------------------------------------------------------------------------
# Checkpoints and the command line
# ------------------------------------------------------------------------------------------------

def write_published_pt(path: Path, arch: str = "resnet18", num_classes: int = 2, seed: int = 0) -> torch.nn.Module:
    """As the published ImageNet training saves, on a GPU: DDP keys, tensor best_prec1, SGD
    optimizer state, every tensor's storage tagged cuda:0 (so a plain torch.load needs a GPU)."""
    torch.manual_seed(seed)
    model = models.build_model(arch, num_classes).eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 56, 56)).sum().backward()
    optimizer.step()
    buffer = io.BytesIO()
    torch.save({"epoch": 100, "arch": arch, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                "best_prec1": torch.tensor(76.5), "optimizer": optimizer.state_dict()}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"  # the storages' location, BINUNICODE
    with zipfile.ZipFile(buffer) as saved, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as copy:
        for name in saved.namelist():
            data = saved.read(name)
            if name.endswith("/data.pkl"):
                assert cpu in data
                data = data.replace(cpu, cuda)
            copy.writestr(name, data)
    return model


def direct_top1(model: torch.nn.Module, source) -> float:
    images = torch.stack([CroppedSet(source, CROP)[k][0] for k in range(len(source))])
    with torch.no_grad():
        logits = model(localization._normalise(images, torch.device("cpu")))
    return 100.0 * (logits.argmax(1).numpy() == source.labels).mean()


def test_published_layout_and_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = write_published_pt(tmp_path / "pretrained" / "comix-blk4.pt")
    if not torch.cuda.is_available():  # what the published eval.py's torch.load does without a GPU
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "pretrained" / "comix-blk4.pt", weights_only=True)
    write_pickles(tmp_path / "data" / "clean")
    write_pickles(tmp_path / "data" / "rep")
    argv = ["--model_name", "comix-blk4", "--data_name", "clean", "rep", "--th", "0.25", "--num_classes", "2",
            "--crop", str(CROP), "--workers", "0", "--tqdm", "0"]
    assert localization.main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "result" / "resnet18@comix-blk4@clean" / "result.json").read_text())
    assert result["top1"] == pytest.approx(direct_top1(model, PickleSet(tmp_path / "data" / "clean")))
    assert result["images"] == 6 and result["arch"] == "resnet18" and result["iou"] == "correct"
    assert "** result localization **" in out and "** result robust (image replacement dataset) **" in out
    row = next(line for line in out.splitlines() if line.startswith("comix-blk4") and "\t" in line)
    assert row.split()[1:] == [f"{result[k]:.2f}" for k in ("top1", "top5", "top1_loc")]
    assert "| comix-blk4 |" in (tmp_path / "result" / "tables.md").read_text()
    assert localization.main(["tables", "--root_dir", "result"]) == 0
    assert "** result localization **" in capsys.readouterr().out
    assert localization.main([*argv, "--limit", "2", "--root_dir", "first2"]) == 0
    assert json.loads((tmp_path / "first2" / "resnet18@comix-blk4@rep" / "result.json").read_text())["images"] == 2


@pytest.mark.slow  # an ImageNet-sized model through main.py: a long run
def test_main_py_imagenet_checkpoint_evaluates(tmp_path, capsys):
    data = write_class_folder(tmp_path / "imagenet", num_classes=2, per_class=3, size=32)
    assert train_main.main(["--dataset", "imagenet", "--data_dir", str(data), "--root_dir", str(tmp_path / "exp"),
                            "--arch", "resnet18", "--labels_per_class", "0", "--method", "vanilla", "--epochs", "1",
                            "--batch_size", "6", "--ngpu", "0", "--workers", "0"]) == 0
    checkpoint = next((tmp_path / "exp").glob("*/checkpoint.pth.tar"))
    write_pickles(tmp_path / "clean")
    capsys.readouterr()
    argv = ["--checkpoint", f"mine={checkpoint}", "--data", str(tmp_path / "clean"), "--num_classes", "2",
            "--crop", str(CROP), "--workers", "0", "--root_dir", str(tmp_path / "result"), "--iou", "published"]
    assert localization.main(argv) == 0
    result = json.loads((tmp_path / "result" / "resnet18@mine@clean" / "result.json").read_text())
    assert result["iou"] == "published" and result["images"] == 6


@pytest.mark.slow  # draws the published figure: a long run
def test_figure(tmp_path, capsys):
    write_published_pt(tmp_path / "pretrained" / "vanilla.pt", seed=1)
    write_published_pt(tmp_path / "pretrained" / "cutmix.pt", seed=2)
    data = write_pickles(tmp_path / "clean")
    out = tmp_path / "fig" / "loc.png"
    argv = ["figure", "--model_name", "vanilla", "cutmix", "--pretrained_dir", str(tmp_path / "pretrained"),
            "--data", str(data), "--num_classes", "2", "--crop", str(CROP), "--images", "0", "3", "5",
            "--out", str(out)]
    assert localization.main(argv) == 0
    with Image.open(out) as image:
        width, height = image.size
    assert width == 480 and height == 750  # 2 methods x 2.4 in, 3 images x 2.5 in, at 100 dpi


def test_tables_text_and_markdown():
    results = [{"model": m, "data": d, "top1": 70.0 + i, "top5": 90.0, "top1_loc": 50.0 + i, "iou": "correct"}
               for i, m in enumerate(["comix-blk4", "vanilla"]) for d in ("noise", "clean", "rep", "mine")]
    text = tables_text(results)
    # the published parse_result.py's titles, word for word
    heads = ["** result localization **", "** result robust (image replacement dataset) **",
             "** result robust (noise dataset) **", "** result on mine **"]
    positions = [text.index(h) for h in heads]
    assert positions == sorted(positions)
    markdown = tables_markdown(results)
    assert "| vanilla | 71.00 | 90.00 | 51.00 |" in markdown
    # the published-formula column of a run on the corrected boxes is labelled and explained
    assert "loc-top1 (published IoU formula only)" in text and FORMULA_ONLY_NOTE in text
    assert FORMULA_ONLY_NOTE in markdown and "--iou published" in FORMULA_ONLY_NOTE
    all_metrics = text[text.index("** all metrics"):].splitlines()
    assert all_metrics[1].split()[:3] == ["model", "data", "IoU"]
    assert [line.split()[2] for line in all_metrics[2:2 + len(results)]] == ["correct"] * len(results)


# ------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def published_pt(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoints") / "vanilla.pt"
    write_published_pt(path)
    return path


@pytest.fixture
def published_tree(tmp_path, published_pt):
    (tmp_path / "pretrained").mkdir()
    shutil.copy(published_pt, tmp_path / "pretrained" / "vanilla.pt")
    write_pickles(tmp_path / "data" / "clean")
    return tmp_path


def run_bad(tree: Path, capsys, *argv: str) -> None:
    base = ["--pretrained_dir", str(tree / "pretrained"), "--data_root", str(tree / "data"), "--crop", str(CROP),
            "--workers", "0", "--root_dir", str(tree / "result")]
    assert localization.main([*argv, *base]) == 2
    assert not (tree / "result").exists()


def test_missing_pickle(published_tree, capsys):
    (published_tree / "data" / "clean" / "bbox.pkl").unlink()
    run_bad(published_tree, capsys, "--num_classes", "2")
    assert_one_error_line(capsys, "lacks bbox.pkl")


def test_box_file_names_images_not_in_the_folder(published_tree, capsys):
    folder = write_image_folder(published_tree / "val")
    boxes = write_box_csv(published_tree / "boxes.csv", extra_ids=("ILSVRC2012_val_00049999",))
    run_bad(published_tree, capsys, "--num_classes", "2", "--data", str(folder), "--boxes", str(boxes))
    assert_one_error_line(capsys, "names 1 images that are not in", "ILSVRC2012_val_00049999")


@pytest.mark.parametrize("boxes", ["csv", "xml"])
def test_box_file_of_other_classes(published_tree, capsys, boxes):
    folder = write_image_folder(published_tree / "val")
    swapped = [dataclasses.replace(fake, label=1 - fake.label) for fake in FAKE_SET]
    path = (write_box_csv(published_tree / "boxes.csv", swapped) if boxes == "csv"
            else write_box_xml(published_tree / "xml", swapped))
    run_bad(published_tree, capsys, "--num_classes", "2", "--data", str(folder), "--boxes", str(path))
    assert_one_error_line(capsys, "lies in class folder n0000000", "use the box file of this folder's images")


@pytest.mark.parametrize("th", ["1", "1.5", "-0.2"])
def test_threshold_outside_zero_to_one(published_tree, capsys, th):
    run_bad(published_tree, capsys, "--num_classes", "2", "--th", th)
    assert_one_error_line(capsys, "--th", "0 <= th < 1")


def test_threshold_zero_is_accepted():
    """As the published eval.py: 0 <= th < 1 (th 0: every pixel above 0 takes part)."""
    assert localization.get_args_parser().parse_args(["--th", "0"]).th == 0.0
    assert localization.get_figure_parser().parse_args(["--th", "0"]).th == 0.0


def inverted(fake):
    x0, y0, x1, y1 = fake.gt[0]
    return dataclasses.replace(fake, gt=[(x1, y0, x0, y1)])


def with_coordinate(value: float):
    return lambda fake: dataclasses.replace(fake, gt=[(fake.gt[0][0], value, *fake.gt[0][2:])])


BAD_BOXES = {  # defect: (change to image 1's boxes, what the line says)
    "inverted": (inverted, "is inverted"),
    "nan": (with_coordinate(float("nan")), "not finite"),
    "infinite": (with_coordinate(float("inf")), "not finite"),
    "no object": (lambda fake: dataclasses.replace(fake, gt=[]), "holds no <object>"),
}


@pytest.mark.parametrize("fmt, defect", [("csv", "inverted"), ("csv", "nan"), ("csv", "infinite"),
                                         ("xml", "inverted"), ("xml", "nan"), ("xml", "no object"),
                                         ("pickle", "inverted"), ("pickle", "nan")])
def test_bad_boxes_are_refused_by_file_and_image(published_tree, capsys, fmt, defect):
    change, says = BAD_BOXES[defect]
    fakes = [change(fake) if k == 1 else fake for k, fake in enumerate(FAKE_SET)]
    if fmt == "pickle":
        bad = write_pickles(published_tree / "data" / "bad", fakes)
        run_bad(published_tree, capsys, "--num_classes", "2", "--data_name", "bad")
        assert_one_error_line(capsys, str(bad / "bbox.pkl"), "image 1", says)
        return
    folder = write_image_folder(published_tree / "val")
    path = (write_box_csv(published_tree / "boxes.csv", fakes) if fmt == "csv"
            else write_box_xml(published_tree / "xml", fakes) / "ILSVRC2012_val_00000002.xml")
    boxes = path.parent if fmt == "xml" else path
    run_bad(published_tree, capsys, "--num_classes", "2", "--data", str(folder), "--boxes", str(boxes))
    assert_one_error_line(capsys, str(path), "ILSVRC2012_val_00000002", says)


def test_checkpoint_of_another_class_count(published_tree, capsys):
    run_bad(published_tree, capsys)  # --num_classes 1000 (ImageNet) against a 2-class checkpoint
    assert_one_error_line(capsys, "was trained for 2 classes", "--num_classes")


def test_checkpoint_of_another_architecture(published_tree, capsys):
    net = models.build_model("preactresnet18", 2)
    torch.save({"epoch": 1, "arch": "preactresnet18", "state_dict": net.state_dict()},
               published_tree / "pretrained" / "other.pt")
    run_bad(published_tree, capsys, "--num_classes", "2", "--model_name", "other")
    assert_one_error_line(capsys, "preactresnet18", "torchvision-style ResNet")
    run_bad(published_tree, capsys, "--num_classes", "2", "--arch", "resnet34")
    assert_one_error_line(capsys, "holds a resnet18 model but this run asks for --arch resnet34")
