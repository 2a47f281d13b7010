"""The data sets of the localization evaluation: images with class labels and ground-truth boxes.

Two sources, each a sequence of :class:`Sample` (image H x W x 3 uint8, class index, boxes n x 4
normalised x0, y0, x1, y1):

- :class:`PickleSet`: the published layout, a folder of ``input.pkl`` (list of H x W x 3 uint8
  images), ``label.pkl`` (class indices) and ``bbox.pkl`` (per image an n x 4 float array,
  normalised). ``input.pkl`` (about 10 GB for the 50,000 validation images) is never loaded
  whole: a restricted unpickler reads its structure, skips the pixel bytes and records where
  they lie, and each image is read from the file when it is needed. Only numpy arrays, dtypes
  and scalars are rebuilt; any other object in a pickle is refused, never constructed.
- :class:`FolderSet`: an ImageFolder (``val/<wnid>/<image>.JPEG``, classes in sorted order, as
  ``main.py --dataset imagenet`` trains) with the boxes users have: ``LOC_val_solution.csv`` of
  the ImageNet localization challenge, or a folder of the ILSVRC2012 validation XML files.

Every box is checked when read: finite, and not inverted (x0 <= x1 and y0 <= y1); an XML file
must hold at least one ``<object>``. A bad box is refused with one line naming the file and the
image, since it would otherwise score IoU 0 (or, without a box, a miss) without a word.

:class:`CroppedSet` turns a source into the evaluation's inputs: optional resize (shorter side),
center crop exactly as torchvision's ``CenterCrop`` (zero padding on a side shorter than the
crop, the extra pixel of an odd difference after the image), uint8 CHW, and the GT boxes in
crop pixels.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
import pickle
import re
import struct
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from comixup.data.datasets import DataError

__all__ = ["Sample", "LocalizationSource", "PickleSet", "FolderSet", "CroppedSet", "collate", "open_source",
           "resize_shorter", "center_crop", "boxes_in_crop", "check_boxes", "read_restricted_pickle",
           "PICKLE_FILES", "IMAGE_EXTENSIONS"]

PICKLE_FILES = ("input.pkl", "label.pkl", "bbox.pkl")
_WNID = re.compile(r"n\d{8}")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclasses.dataclass
class Sample:
    image: np.ndarray
    """H x W x 3 uint8."""
    label: int
    boxes: np.ndarray
    """n x 4 normalised (x0, y0, x1, y1) in [0, 1]; the pickle's own dtype (the published
    arithmetic computes in it), float64 for boxes from a box file."""


class LocalizationSource(Protocol):
    name: str
    labels: np.ndarray

    def __len__(self) -> int: ...

    def sample(self, index: int) -> Sample: ...


# ---------------------------------------------------------------------------------------------
# Restricted, lazy unpickling of the published pickles
# ---------------------------------------------------------------------------------------------

_LAZY_MIN_BYTES = 4096
"""Byte strings at least this long, stored outside a pickle frame, stay on disk until read."""


@dataclasses.dataclass(frozen=True)
class _Payload:
    """Bytes left in the pickle file: ``length`` bytes at ``offset``."""
    offset: int
    length: int


class _LazyArray:
    """A numpy array as its pickle describes it; :meth:`load` builds it, reading the file if needed."""

    def __init__(self, *_ignored: Any) -> None:
        self.shape: tuple[int, ...] = ()
        self.dtype = np.dtype(np.uint8)
        self.order = "C"
        self.data: bytes | _Payload = b""

    def __setstate__(self, state: tuple) -> None:  # numpy's ndarray state: (version, shape, dtype, fortran, data)
        _version, shape, dtype, fortran, data = state
        self.shape, self.dtype, self.order, self.data = tuple(shape), np.dtype(dtype), "F" if fortran else "C", data
        if isinstance(data, str):  # protocol 2 stores the bytes as a latin-1 string
            self.data = data.encode("latin-1")

    @classmethod
    def from_buffer(cls, data: bytes | _Payload, dtype: Any, shape: Sequence[int], order: str) -> _LazyArray:
        array = cls()
        array.shape, array.dtype, array.order, array.data = tuple(shape), np.dtype(dtype), order, data
        return array

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def load(self, path: str | os.PathLike, index: slice | int | None = None) -> np.ndarray:
        """The array (or ``array[index]`` along the first axis of a C-ordered array, reading only that part)."""
        shape, start = self.shape, 0
        if index is not None:
            if self.order != "C" or not shape:
                return self.load(path)[index]
            row = self.nbytes // shape[0] if shape[0] else 0
            start, shape = index * row, shape[1:]
        count = int(np.prod(shape, dtype=np.int64)) * self.dtype.itemsize
        if isinstance(self.data, _Payload):
            if start + count > self.data.length:
                raise DataError(f"{path} is cut off: an array needs {count} bytes past what the file holds")
            with open(path, "rb") as f:
                f.seek(self.data.offset + start)
                raw = f.read(count)
            if len(raw) != count:
                raise DataError(f"{path} is cut off: an array of {count} bytes ends early")
        else:
            raw = bytes(self.data[start:start + count])
        return np.frombuffer(raw, dtype=self.dtype).reshape(shape, order=self.order).copy()


def _scalar(dtype: Any, data: bytes | str) -> Any:
    raw = data.encode("latin-1") if isinstance(data, str) else bytes(data)
    return np.frombuffer(raw, dtype=np.dtype(dtype))[0]


def _latin1_encode(text: str, encoding: str = "latin-1") -> bytes:
    if encoding.replace("_", "-").lower() not in ("latin-1", "latin1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED_GLOBALS[(_module, "_reconstruct")] = _LazyArray
    _ALLOWED_GLOBALS[(_module, "scalar")] = _scalar
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED_GLOBALS[(_module, "_frombuffer")] = _LazyArray.from_buffer
_ALLOWED_GLOBALS[("numpy", "ndarray")] = np.ndarray
_ALLOWED_GLOBALS[("numpy", "dtype")] = np.dtype
_ALLOWED_GLOBALS[("_codecs", "encode")] = _latin1_encode


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its byte readers can be replaced
    """Builds lists, tuples, dicts, numbers and strings; numpy arrays become :class:`_LazyArray`
    whose long byte strings stay in the file (only numpy's reconstruction functions, dtypes and
    scalars are allowed as globals)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: io.BufferedReader) -> None:
        super().__init__(file)
        self._raw = file

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it holds a {module}.{name} object; only lists of numpy arrays and "
                                         f"numbers are read (refusing to unpickle anything else)") from None

    def _bytes(self, length: int, kind: type) -> None:
        if length > _LAZY_MIN_BYTES and self._unframer.current_frame is None:
            offset = self._raw.tell()
            self._raw.seek(length, os.SEEK_CUR)
            self.append(_Payload(offset, length))
            return
        data = self.read(length)
        if len(data) != length:
            raise EOFError("pickle data was truncated")
        self.append(kind(data))

    def _load_binbytes(self) -> None:
        self._bytes(struct.unpack("<I", self.read(4))[0], bytes)

    def _load_binbytes8(self) -> None:
        self._bytes(struct.unpack("<Q", self.read(8))[0], bytes)

    def _load_bytearray8(self) -> None:
        self._bytes(struct.unpack("<Q", self.read(8))[0], bytearray)

    dispatch[pickle.BINBYTES[0]] = _load_binbytes
    dispatch[pickle.BINBYTES8[0]] = _load_binbytes8
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8


def read_restricted_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` with :class:`_RestrictedUnpickler` (arrays stay lazy); DataError if it cannot."""
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f).load()
    except FileNotFoundError:
        raise DataError(f"missing {path}: a published data folder holds {', '.join(PICKLE_FILES)}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, struct.error, OSError, KeyError,
            IndexError, AttributeError) as err:
        raise DataError(f"cannot read {path}: {' '.join(str(err).split()) or type(err).__name__}") from err


def _materialise(obj: Any, path: str | os.PathLike) -> Any:
    if isinstance(obj, _LazyArray):
        return obj.load(path)
    if isinstance(obj, (list, tuple)):
        return [_materialise(item, path) for item in obj]
    return obj


class PickleSet:
    """The published pickle folder (``input.pkl``, ``label.pkl``, ``bbox.pkl``), images read lazily."""

    def __init__(self, folder: str | os.PathLike, name: str | None = None) -> None:
        self.folder = Path(folder)
        self.name = name or self.folder.name
        if not self.folder.is_dir():
            raise DataError(f"no data folder {self.folder}: expected a folder holding {', '.join(PICKLE_FILES)} "
                            f"(or an ImageFolder of images with --boxes)")
        missing = [f for f in PICKLE_FILES if not (self.folder / f).is_file()]
        if missing:
            hint = "" if (self.folder / "input.pkl").exists() else " (for an ImageFolder of images, give --boxes)"
            raise DataError(f"{self.folder} lacks {', '.join(missing)}: a published data folder holds "
                            f"{', '.join(PICKLE_FILES)}{hint}")
        self.input_path = self.folder / "input.pkl"
        self.labels = self._read_labels(self.folder / "label.pkl")
        self.boxes = self._read_boxes(self.folder / "bbox.pkl")
        self._images = read_restricted_pickle(self.input_path)
        self._stacked = isinstance(self._images, _LazyArray)
        count = self._images.shape[0] if self._stacked and self._images.shape else None
        if not self._stacked:
            if not isinstance(self._images, list) or not all(isinstance(x, _LazyArray) for x in self._images):
                raise DataError(f"{self.input_path} is not a list of numpy images")
            count = len(self._images)
            bad = next((i for i, x in enumerate(self._images)
                        if len(x.shape) != 3 or x.shape[2] != 3 or x.dtype != np.uint8), None)
            if bad is not None:
                raise DataError(f"{self.input_path}: image {bad} is {self._images[bad].dtype} of shape "
                                f"{self._images[bad].shape}; expected H x W x 3 uint8")
        elif len(self._images.shape) != 4 or self._images.shape[3] != 3 or self._images.dtype != np.uint8:
            raise DataError(f"{self.input_path} holds a {self._images.dtype} array of shape {self._images.shape}; "
                            f"expected a list of H x W x 3 uint8 images")
        if not count == len(self.labels) == len(self.boxes):
            raise DataError(f"{self.folder}: input.pkl holds {count} images, label.pkl {len(self.labels)} labels "
                            f"and bbox.pkl {len(self.boxes)} box arrays; they must match")

    @staticmethod
    def _read_labels(path: Path) -> np.ndarray:
        raw = _materialise(read_restricted_pickle(path), path)
        try:
            labels = np.asarray(raw).reshape(-1)
            if labels.dtype.kind not in "iu" and not (labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
                raise ValueError
            labels = labels.astype(np.int64)
        except (ValueError, TypeError):
            raise DataError(f"{path} does not hold class indices (a list of integers)") from None
        if labels.size and labels.min() < 0:
            raise DataError(f"{path} holds a negative class index {labels.min()}")
        return labels

    @staticmethod
    def _read_boxes(path: Path) -> list[np.ndarray]:
        """Per image an n x 4 array in the dtype the pickle stores (``--iou published`` computes in
        it, as the published code does); lists of numbers become float64."""
        raw = _materialise(read_restricted_pickle(path), path)
        if isinstance(raw, np.ndarray) and raw.ndim == 3:
            raw = list(raw)
        if not isinstance(raw, list):
            raise DataError(f"{path} does not hold a list of per-image box arrays")
        boxes = []
        for i, item in enumerate(raw):
            try:
                array = np.asarray(item)
            except ValueError:  # ragged lists
                array = np.empty(0, dtype=object)
            if array.ndim == 1 and array.size == 4:
                array = array.reshape(1, 4)
            if array.dtype.kind not in "fiu" or array.ndim != 2 or array.shape[1] != 4:
                raise DataError(f"{path}: the boxes of image {i} are not an n x 4 array of numbers "
                                f"(normalised x0, y0, x1, y1)")
            check_boxes(array, f"{path}, image {i}")
            boxes.append(array)
        return boxes

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, index: int) -> Sample:
        image = (self._images.load(self.input_path, index) if self._stacked
                 else self._images[index].load(self.input_path))
        return Sample(image, int(self.labels[index]), self.boxes[index].copy())


# ---------------------------------------------------------------------------------------------
# ImageFolder with the ImageNet box files
# ---------------------------------------------------------------------------------------------

def _scan_image_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """(class folder names, (image, class index)) of an ImageFolder; for a flat folder of images
    (ImageNet's val/ as distributed), no classes and every index -1."""
    if not root.is_dir():
        raise DataError(f"no image folder {root}: expected <folder>/<class>/<image> (e.g. ImageNet's val/)")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        flat = sorted(entry.name for entry in os.scandir(root)
                      if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS))
        if flat:
            return [], [(root / name, -1) for name in flat]
        raise DataError(f"{root} holds neither class folders nor images ({', '.join(IMAGE_EXTENSIONS)})")
    items = []
    for index, name in enumerate(classes):
        for dirpath, _dirs, files in sorted(os.walk(root / name, followlinks=True)):
            items += [(Path(dirpath) / f, index) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not items:
        raise DataError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return classes, items


@dataclasses.dataclass
class _Boxed:
    boxes: np.ndarray
    """n x 4 pixel boxes (x0, y0, x1, y1)."""
    wnid: str | None
    """The class the box file names (its first box's)."""


def check_boxes(boxes: np.ndarray, where: str) -> None:
    """DataError (one line starting with ``where``, which names the file and the image) unless
    every box of ``boxes`` (n, 4) is finite and not inverted: x0 <= x1 and y0 <= y1. A box of zero
    width or height is allowed (it scores IoU 0, as the annotation says)."""
    finite = np.isfinite(boxes).all(axis=1)
    if not finite.all():
        x0, y0, x1, y1 = boxes[int(np.argmin(finite))]
        raise DataError(f"{where}: box ({x0}, {y0}, {x1}, {y1}) is not finite; coordinates must be numbers")
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        x0, y0, x1, y1 = boxes[int(np.argmax(inverted))]
        raise DataError(f"{where}: box ({x0}, {y0}, {x1}, {y1}) is inverted; boxes are (x0, y0, x1, y1) "
                        f"with x0 <= x1 and y0 <= y1")


def _read_box_csv(path: Path) -> dict[str, _Boxed]:
    """LOC_val_solution.csv: ``ImageId,PredictionString`` rows, the string 'wnid x0 y0 x1 y1 ...' in pixels."""
    boxes: dict[str, _Boxed] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = csv.reader(f)
            header = next(rows, None)
            if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
                raise DataError(f"{path} is not LOC_val_solution.csv: its header must be ImageId,PredictionString")
            for line, row in enumerate(rows, start=2):
                if not row:
                    continue
                fields = row[1].split() if len(row) > 1 else []
                if len(row) != 2 or not fields or len(fields) % 5:
                    raise DataError(f"{path}, line {line}: expected 'id,wnid x0 y0 x1 y1 [wnid x0 y0 x1 y1 ...]'")
                image = row[0].strip()
                try:
                    coords = [[float(v) for v in fields[k + 1:k + 5]] for k in range(0, len(fields), 5)]
                except ValueError:
                    raise DataError(f"{path}, line {line} (image {image}): box coordinates must be numbers") from None
                array = np.asarray(coords, dtype=np.float64)
                check_boxes(array, f"{path}, line {line} (image {image})")
                boxes[image] = _Boxed(array, fields[0])
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from err
    return boxes


def _read_box_xml_folder(folder: Path) -> dict[str, _Boxed]:
    """ILSVRC2012 validation XML files (PASCAL VOC style): <object><name>, <bndbox><xmin>... in pixels."""
    boxes: dict[str, _Boxed] = {}
    for path in sorted(folder.rglob("*.xml")):
        try:
            root = ElementTree.parse(path).getroot()
            objects = list(root.iter("object"))
            coords = [[float(obj.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax")]
                      for obj in objects]
        except (ElementTree.ParseError, TypeError, ValueError, OSError) as err:
            raise DataError(f"cannot read the boxes of {path}: {' '.join(str(err).split())}") from err
        if not objects:  # every ILSVRC2012 validation image has at least one box
            raise DataError(f"{path} (image {path.stem}) holds no <object> box; every image needs at least one")
        array = np.asarray(coords, dtype=np.float64).reshape(-1, 4)
        check_boxes(array, f"{path} (image {path.stem})")
        boxes[path.stem] = _Boxed(array, objects[0].findtext("name"))
    if not boxes:
        raise DataError(f"{folder} holds no .xml box files (ILSVRC2012 validation annotations)")
    return boxes


def read_box_file(path: str | os.PathLike) -> dict[str, _Boxed]:
    """Pixel boxes (n, 4) and class per image id (file name without extension) from a CSV file or an
    XML folder."""
    path = Path(path)
    if path.is_dir():
        return _read_box_xml_folder(path)
    if not path.is_file():
        raise DataError(f"no box file {path}: give LOC_val_solution.csv or the folder of the ILSVRC2012 "
                        f"validation .xml files")
    return _read_box_csv(path)


class FolderSet:
    """An ImageFolder of validation images with pixel boxes from :func:`read_box_file`.

    Every image needs boxes and every boxed id must be an image of the folder (a mismatch means
    the wrong folder or box file); boxes are normalised by the image's real size when read. A
    flat folder of images (``flat``) takes its classes from the box file: the sorted wnids it
    names, which are ImageNet's class indices only when it covers every class (the caller checks
    the count).
    """

    def __init__(self, root: str | os.PathLike, boxes: str | os.PathLike, name: str | None = None) -> None:
        self.root = Path(root)
        self.name = name or self.root.name
        self.classes, self.items = _scan_image_folder(self.root)
        self.flat = not self.classes
        pixel_boxes = read_box_file(boxes)
        if self.flat:
            unnamed = next((i for i, b in pixel_boxes.items() if not b.wnid), None)
            if unnamed is not None:
                raise DataError(f"{self.root} has no class folders and {boxes} gives no class for {unnamed}")
            self.classes = sorted({b.wnid for b in pixel_boxes.values()})
            index = {wnid: k for k, wnid in enumerate(self.classes)}
            self.items = [(path, index[pixel_boxes[path.stem].wnid] if path.stem in pixel_boxes else -1)
                          for path, _ in self.items]
        self.labels = np.asarray([label for _path, label in self.items], dtype=np.int64)
        ids = [path.stem for path, _label in self.items]
        unknown = sorted(set(pixel_boxes) - set(ids))
        if unknown:
            raise DataError(f"{boxes} names {len(unknown)} images that are not in {self.root} (e.g. {unknown[0]}); "
                            f"use the box file of this folder's images")
        missing = [i for i in ids if i not in pixel_boxes]
        if missing:
            raise DataError(f"{len(missing)} images of {self.root} have no boxes in {boxes} (e.g. {missing[0]})")
        if not self.flat and all(_WNID.fullmatch(name) for name in self.classes):  # the box file agrees
            wrong = next(((path, pixel_boxes[path.stem].wnid) for path, label in self.items
                          if pixel_boxes[path.stem].wnid not in (None, self.classes[label])), None)
            if wrong is not None:
                raise DataError(f"{wrong[0]} lies in class folder {wrong[0].parent.name} but {boxes} gives it class "
                                f"{wrong[1]}; use the box file of this folder's images")
        self.pixel_boxes = [pixel_boxes[i].boxes for i in ids]

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, index: int) -> Sample:
        path, label = self.items[index]
        try:
            with Image.open(path) as img:
                image = np.asarray(img.convert("RGB"))
        except (OSError, ValueError) as err:
            raise DataError(f"cannot decode image {path}: {' '.join(str(err).split())}") from err
        height, width = image.shape[:2]
        boxes = self.pixel_boxes[index] / np.array([width, height, width, height], dtype=np.float64)
        return Sample(image, label, boxes)


def open_source(path: str | os.PathLike, boxes: str | os.PathLike | None,
                name: str | None = None) -> LocalizationSource:
    """A :class:`PickleSet` for a folder holding input.pkl, else a :class:`FolderSet` (needs ``boxes``)."""
    path = Path(path)
    if (path / "input.pkl").exists() or boxes is None:
        return PickleSet(path, name)
    return FolderSet(path, boxes, name)


# ---------------------------------------------------------------------------------------------
# Resize, crop and boxes in crop pixels
# ---------------------------------------------------------------------------------------------

def resize_shorter(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` with its shorter side ``size`` (torchvision's ``Resize(size)`` on a PIL image)."""
    import torchvision.transforms.functional as TF

    return np.asarray(TF.resize(Image.fromarray(image), size))


def _crop_offsets(length: int, crop: int) -> tuple[int, int]:
    """(zero padding before the image, crop start in the padded image) along one axis, as
    torchvision's center_crop: a side shorter than the crop is padded to the crop, (crop - length)
    // 2 before and the rest after it; the start is round((padded length - crop) / 2)."""
    pad = (crop - length) // 2 if length < crop else 0
    return pad, int(round((max(length, crop) - crop) / 2.0))


def center_crop(image: np.ndarray, crop: int) -> np.ndarray:
    """The crop x crop centre of an H x W (x C) image, zero-padded first on any side shorter than
    the crop: pixel for pixel what torchvision's ``CenterCrop(crop)`` returns."""
    height, width = image.shape[:2]
    (pad_y, top), (pad_x, left) = _crop_offsets(height, crop), _crop_offsets(width, crop)
    if height < crop or width < crop:  # pad even where the padding before is 0 (a difference of 1)
        padded = np.zeros((max(height, crop), max(width, crop), *image.shape[2:]), dtype=image.dtype)
        padded[pad_y:pad_y + height, pad_x:pad_x + width] = image
        image = padded
    return image[top:top + crop, left:left + crop]


def _published_boxes_in_crop(boxes: np.ndarray, height: int, width: int, crop: int) -> np.ndarray:
    """The published GT box arithmetic, in the boxes' own dtype: per coordinate, times the image
    side, clipped to [off, side - off] with off = (side - crop) / 2 unrounded, minus off, stored
    back in that dtype, then truncated to integers. Python numbers keep a float32 array float32
    (as in the published code), so its products round where float64 ones would not."""
    out = np.array(boxes, copy=True)
    for column, side in enumerate((width, height, width, height)):
        off = (side - crop) / 2
        out[:, column] = np.clip(out[:, column] * side, off, side - off) - off
    return out.astype(np.int32).astype(np.float64)


def boxes_in_crop(boxes: np.ndarray, height: int, width: int, crop: int, published: bool = False) -> np.ndarray:
    """Normalised boxes (n, 4) of an H x W image in float64 pixels of its center crop (the
    geometry of :func:`center_crop`), clipped to it.

    ``published=True``: the published arithmetic (:func:`_published_boxes_in_crop`)."""
    if published:
        return _published_boxes_in_crop(boxes, height, width, crop)
    scale = np.array([width, height, width, height], dtype=np.float64)
    pixels = boxes * scale
    (pad_y, top), (pad_x, left) = _crop_offsets(height, crop), _crop_offsets(width, crop)
    shift = np.array([pad_x - left, pad_y - top, pad_x - left, pad_y - top], dtype=np.float64)
    return np.clip(pixels + shift, 0, crop)


class CroppedSet(torch.utils.data.Dataset):
    """(image uint8 3 x crop x crop, label, boxes in crop pixels, index) of a source's images."""

    def __init__(self, source: LocalizationSource, crop: int = 224, resize: int = 0,
                 published_boxes: bool = False, indices: Sequence[int] | None = None) -> None:
        self.source = source
        self.crop = crop
        self.resize = resize
        self.published_boxes = published_boxes
        self.indices = list(range(len(source))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, np.ndarray, int]:
        index = self.indices[position]
        sample = self.source.sample(index)
        image = resize_shorter(sample.image, self.resize) if self.resize else sample.image
        height, width = image.shape[:2]
        boxes = boxes_in_crop(sample.boxes, height, width, self.crop, self.published_boxes)
        tensor = torch.from_numpy(np.ascontiguousarray(center_crop(image, self.crop).transpose(2, 0, 1)))
        return tensor, sample.label, boxes, index


def collate(batch: list[tuple[torch.Tensor, int, np.ndarray, int]]
            ) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray], list[int]]:
    """Stacks images and labels; boxes (a different count per image) and indices stay lists."""
    images, labels, boxes, indices = zip(*batch, strict=False)
    return torch.stack(images), torch.as_tensor(labels, dtype=torch.int64), list(boxes), list(indices)
