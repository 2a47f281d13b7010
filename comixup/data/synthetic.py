"""Small data sets written in the real on-disk formats, for tests.

The project's tests never read real data: each test writes what it needs with these
functions into its own temporary folder.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def _class_images(rng: np.random.Generator, label: int, count: int, size: int) -> np.ndarray:
    """Images whose colour depends on the class, so a model can learn them in a few steps."""
    base = np.zeros((count, size, size, 3), dtype=np.float64)
    base[..., label % 3] = 150 + 20 * (label // 3 % 5)
    base[:, : size // 2, :, (label + 1) % 3] += 60 * (label % 2)
    noise = rng.normal(0, 25, size=base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _cifar_split(rng: np.random.Generator, num_classes: int, per_class: int) -> tuple[np.ndarray, list[int]]:
    images, labels = [], []
    for c in range(num_classes):
        images.append(_class_images(rng, c, per_class, 32))
        labels += [c] * per_class
    order = rng.permutation(len(labels))
    data = np.concatenate(images)[order]  # N, H, W, C
    rows = data.transpose(0, 3, 1, 2).reshape(len(labels), 3 * 32 * 32)  # the pickle's CHW row order
    return rows, [labels[i] for i in order]


def write_cifar(root: str | os.PathLike, dataset: str = "cifar10", train_per_class: int = 10,
                test_per_class: int = 4, num_classes: int | None = None, seed: int = 0) -> Path:
    """Write CIFAR-10 or CIFAR-100 python batches under ``root`` as torchvision expects them.

    The md5 sums differ from the official files: tests lift torchvision's check with the
    ``cifar_no_md5`` fixture (conftest.py).
    """
    num_classes = num_classes or (10 if dataset == "cifar10" else 100)
    rng = np.random.default_rng(seed)
    folder = Path(root) / CIFAR_FOLDERS[dataset]
    folder.mkdir(parents=True, exist_ok=True)
    train_rows, train_labels = _cifar_split(rng, num_classes, train_per_class)
    test_rows, test_labels = _cifar_split(rng, num_classes, test_per_class)
    names = [f"class{c}" for c in range(num_classes)]
    if dataset == "cifar10":
        chunks = np.array_split(np.arange(len(train_labels)), 5)
        for k, idx in enumerate(chunks, start=1):
            _dump(folder / f"data_batch_{k}", {"batch_label": f"training batch {k} of 5",
                                               "data": train_rows[idx],
                                               "labels": [train_labels[i] for i in idx]})
        _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": test_rows,
                                      "labels": test_labels})
        _dump(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": len(chunks[0])})
    else:
        _dump(folder / "train", {"data": train_rows, "fine_labels": train_labels,
                                 "coarse_labels": [c // 5 for c in train_labels]})
        _dump(folder / "test", {"data": test_rows, "fine_labels": test_labels,
                                "coarse_labels": [c // 5 for c in test_labels]})
        _dump(folder / "meta", {"fine_label_names": names, "coarse_label_names": names[:20]})
    return Path(root)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_tiny_imagenet_raw(root: str | os.PathLike, num_classes: int = 3, train_per_class: int = 4,
                            val_per_class: int = 2, size: int = 64, seed: int = 0) -> Path:
    """Write the raw Tiny-ImageNet-200 layout (as unzipped): ``root/tiny-imagenet-200/``.

    train/<wnid>/images/<wnid>_<k>.JPEG with <wnid>_boxes.txt, val/images/val_<k>.JPEG with
    val/val_annotations.txt, test/images/, wnids.txt and words.txt. Returns the data folder.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / "tiny-imagenet-200"
    wnids = [f"n{1000000 + 17 * c:08d}" for c in range(num_classes)]
    (base / "val" / "images").mkdir(parents=True, exist_ok=True)
    (base / "test" / "images").mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("".join(w + "\n" for w in wnids))
    (base / "words.txt").write_text("".join(f"{w}\tthing {c}\n" for c, w in enumerate(wnids)))
    annotations = []
    k = 0
    for c, wnid in enumerate(wnids):
        images_dir = base / "train" / wnid / "images"
        images_dir.mkdir(parents=True, exist_ok=True)
        boxes = []
        for i, img in enumerate(_class_images(rng, c, train_per_class, size)):
            name = f"{wnid}_{i}.JPEG"
            Image.fromarray(img).save(images_dir / name, format="JPEG", quality=95)
            boxes.append(f"{name}\t0\t0\t{size - 1}\t{size - 1}\n")
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
        for img in _class_images(rng, c, val_per_class, size):
            name = f"val_{k}.JPEG"
            Image.fromarray(img).save(base / "val" / "images" / name, format="JPEG", quality=95)
            annotations.append(f"{name}\t{wnid}\t0\t0\t{size - 1}\t{size - 1}\n")
            k += 1
    (base / "val" / "val_annotations.txt").write_text("".join(annotations))
    Image.fromarray(_class_images(rng, 0, 1, size)[0]).save(base / "test" / "images" / "test_0.JPEG")
    return base


def blob_saliency(batch: int, size: int = 32, seed: int = 0):
    """Smooth saliency maps (batch, size, size) with one bright blob each, at random places."""
    import torch

    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, 2, generator=g) * size
    ys, xs = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    d2 = (ys - centres[:, 0, None, None]) ** 2 + (xs - centres[:, 1, None, None]) ** 2
    return torch.exp(-d2 / 40) + 0.01


def write_image_folder(root: str | os.PathLike, num_classes: int = 3, per_class: int = 4, size: int = 32,
                       seed: int = 0, splits: tuple[str, ...] = ("train", "val")) -> Path:
    """Write an ImageFolder tree ``root/<split>/<class>/<k>.png`` (the layout of an ImageNet copy)."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for c in range(num_classes):
            folder = Path(root) / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(_class_images(rng, c, per_class, size)):
                Image.fromarray(img).save(folder / f"{i}.png")
    return Path(root)
