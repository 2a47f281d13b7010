"""Small localization data sets in the real on-disk formats, and a classifier whose CAM is known.

Images are 64 x 64 (the tests crop 56): a grey textured background with one or two coloured
rectangles (red for class 0, blue for class 1). :class:`ColourCAMNet` scores "red" and "blue" per
2 x 2 cell, so the CAM of class 0 is the red area and that of class 1 the blue area.
"""
from __future__ import annotations

import csv
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

SIZE = 64
CROP = 56
RED = (220, 30, 30)
BLUE = (30, 30, 220)
WNIDS = ("n00000001", "n00000002")


@dataclass
class FakeImage:
    label: int
    rects: list[tuple[tuple[int, int, int, int], tuple[int, int, int]]]
    """(x0, y0, x1, y1) pixel rectangles (end exclusive) with their colour."""
    gt: list[tuple[int, int, int, int]] = field(default_factory=list)
    """GT boxes in pixels (x0, y0, x1, y1)."""


# 6 images: what the hand-set model gets right is known (see test_known_cam_metrics)
FAKE_SET = [
    FakeImage(0, [((12, 12, 36, 30), RED)], [(12, 12, 36, 30)]),
    FakeImage(0, [((30, 20, 54, 50), RED)], [(30, 20, 54, 50)]),
    FakeImage(1, [((10, 30, 40, 52), BLUE)], [(10, 30, 40, 52)]),
    # blue object, larger red distractor: classified 0 (wrong), the class-1 CAM still finds it
    FakeImage(1, [((8, 8, 26, 26), BLUE), ((30, 30, 60, 60), RED)], [(8, 8, 26, 26)]),
    # the box is annotated where there is no object (apart on both axes from the red one):
    # classified right, localised wrong; the published IoU counts it as a hit
    FakeImage(0, [((8, 8, 18, 18), RED)], [(31, 31, 43, 43)]),
    # two blue objects: the box is the larger one's
    FakeImage(1, [((20, 14, 46, 40), BLUE), ((6, 50, 14, 58), BLUE)], [(20, 14, 46, 40), (6, 50, 14, 58)]),
]


def render(fake: FakeImage, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grey = rng.integers(70, 190, size=(SIZE, SIZE, 1))
    image = np.clip(grey + rng.integers(-12, 13, size=(SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    for (x0, y0, x1, y1), colour in fake.rects:
        image[y0:y1, x0:x1] = colour
    return image


def normalised_boxes(fake: FakeImage) -> np.ndarray:
    return np.asarray(fake.gt, dtype=np.float64).reshape(-1, 4) / SIZE


def images_and_boxes(fakes: list[FakeImage] = FAKE_SET) -> tuple[list[np.ndarray], list[int], list[np.ndarray]]:
    return ([render(f, i) for i, f in enumerate(fakes)], [f.label for f in fakes],
            [normalised_boxes(f) for f in fakes])


def write_pickles(folder: Path, fakes: list[FakeImage] = FAKE_SET, protocol: int = 4) -> Path:
    """The published layout: input.pkl (list of H x W x 3 uint8), label.pkl, bbox.pkl (normalised n x 4)."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels, boxes = images_and_boxes(fakes)
    for name, obj in (("input.pkl", images), ("label.pkl", labels), ("bbox.pkl", boxes)):
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)
    return folder


def image_id(index: int) -> str:
    return f"ILSVRC2012_val_{index + 1:08d}"


def write_image_folder(folder: Path, fakes: list[FakeImage] = FAKE_SET, flat: bool = False) -> Path:
    """val/<wnid>/<id>.png, or val/<id>.png when ``flat`` (lossless, so the pixels match the pickles)."""
    images, labels, _ = images_and_boxes(fakes)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        target = folder if flat else folder / WNIDS[label]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target / f"{image_id(index)}.png")
    return folder


def write_box_csv(path: Path, fakes: list[FakeImage] = FAKE_SET, extra_ids: tuple[str, ...] = ()) -> Path:
    """LOC_val_solution.csv: ImageId,PredictionString with 'wnid x0 y0 x1 y1 ...' in pixels."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "PredictionString"])
        for index, fake in enumerate(fakes):
            writer.writerow([image_id(index), " ".join(f"{WNIDS[fake.label]} {x0} {y0} {x1} {y1}"
                                                       for x0, y0, x1, y1 in fake.gt)])
        for extra in extra_ids:
            writer.writerow([extra, f"{WNIDS[0]} 1 1 5 5"])
    return path


def write_box_xml(folder: Path, fakes: list[FakeImage] = FAKE_SET) -> Path:
    """One ILSVRC2012 validation XML file per image."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, fake in enumerate(fakes):
        objects = "".join(f"<object><name>{WNIDS[fake.label]}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                          f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>" for x0, y0, x1, y1 in fake.gt)
        (folder / f"{image_id(index)}.xml").write_text(
            f"<annotation><filename>{image_id(index)}</filename><size><width>{SIZE}</width><height>{SIZE}</height>"
            f"<depth>3</depth></size>{objects}</annotation>")
    return folder


class ColourCAMNet(nn.Module):
    """layer4: per 2 x 2 cell, ReLU(red - green - 0.5) and ReLU(blue - green - 0.5) of the normalised
    input; fc: the identity. Class 0's CAM is the red area, class 1's the blue area, and the
    logits are the mean redness and blueness (the larger area wins)."""

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(3, 2, kernel_size=2, stride=2)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[0, 0], conv.weight[0, 1] = 0.25, -0.25
            conv.weight[1, 2], conv.weight[1, 1] = 0.25, -0.25
            conv.bias.fill_(-0.5)
        self.layer4 = nn.Sequential(conv, nn.ReLU())
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(2))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer4(x).mean(dim=(2, 3)))
