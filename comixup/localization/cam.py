"""Weakly supervised localization from class activation maps (CAM): maps, boxes, IoU, metrics.

The published Co-Mixup localization evaluation, batched and device-agnostic:

- :func:`logits_and_features` runs a torchvision-style ResNet once and returns its logits and its
  last stage's features (what ``avgpool`` + ``fc`` turn into the logits).
- :func:`class_activation_maps`: the class's fc weights times the features, summed over channels,
  a 3x3 box sum (zero padding), bicubic upsampling to the crop, per-image min-max normalisation
  (a flat map gives zeros, not NaN).
- :func:`box_from_gray`: pixels of the map (scaled to 0-255) strictly above ``th x max``, the
  bounding rectangle of the largest external contour (OpenCV); no contour gives (0, 0, 1, 1).
- :func:`box_iou`: boxes as (x0, y0, x1, y1) pixel edges. The correct IoU clamps the
  intersection at 0; ``published=True`` reproduces the published formula, which does not, so
  two boxes apart on both axes score a positive, even perfect, IoU.
- :class:`LocalizationScores` accumulates top-1/top-5 classification, top-1 localization (the
  published metric), GT-known localization and MaxBoxAcc (clovaai's wsolevaluation: the best
  CAM threshold of a sweep).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:
    import cv2
except ImportError:  # one line that says what to install, instead of a bare "No module named 'cv2'"
    raise ImportError('the localization evaluation needs OpenCV, which is not installed: '
                      'pip install "comixup[localization]"') from None

__all__ = ["logits_and_features", "class_activation_maps", "to_gray", "box_from_gray", "boxes_from_gray",
           "box_iou", "ImageResult", "LocalizationScores", "IOU_MODES", "NO_BOX"]

IOU_MODES = ("correct", "published")
NO_BOX = (0.0, 0.0, 1.0, 1.0)
"""The box of a map with no pixel above the threshold (the published choice)."""

_BOX_SUM = 3


def logits_and_features(model: nn.Module, images: Tensor, feature_layer: str = "layer4") -> tuple[Tensor, Tensor]:
    """One forward pass of ``model``: its logits (B, K) and the output of ``feature_layer`` (B, C, h, w),
    captured by a forward hook, so any model whose logits are fc(avgpool(that output)) works."""
    captured: list[Tensor] = []
    handle = getattr(model, feature_layer).register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = model(images)
    finally:
        handle.remove()
    return logits, captured[-1]


def class_activation_maps(features: Tensor, fc_weight: Tensor, classes: Tensor, size: Sequence[int]) -> Tensor:
    """CAMs (B, H, W) in [0, 1] of ``classes`` (B,) from ``features`` (B, C, h, w) and the fc weight (K, C).

    Per image: sum over channels of weight x feature, 3x3 box sum with zero padding, bicubic
    upsampling to ``size`` (H, W), min-max normalisation. A flat map (max == min) is all zeros.
    """
    weights = fc_weight.detach().float()[classes.to(fc_weight.device)]
    cam = torch.einsum("bc,bchw->bhw", weights, features.float())[:, None]
    box = torch.ones(1, 1, _BOX_SUM, _BOX_SUM, dtype=cam.dtype, device=cam.device)
    cam = F.conv2d(cam, box, padding=_BOX_SUM // 2)
    cam = F.interpolate(cam, size=tuple(size), mode="bicubic", align_corners=False)[:, 0]
    low = cam.amin(dim=(1, 2), keepdim=True)
    span = cam.amax(dim=(1, 2), keepdim=True) - low
    flat = ~(span > 0)  # also catches NaN
    cam = (cam - low) / torch.where(flat, torch.ones_like(span), span)
    return cam.masked_fill(flat, 0.0)


def to_gray(cams: Tensor) -> Tensor:
    """CAMs in [0, 1] as uint8 0-255, truncated as the published code's ``astype(np.uint8)`` does."""
    return (cams * 255).clamp_(0, 255).to(torch.uint8)


def box_from_gray(gray: np.ndarray, th: float) -> tuple[float, float, float, float]:
    """The box (x0, y0, x1, y1) of a uint8 map at threshold ``th`` (0 <= th < 1).

    Pixels strictly above ``int(th x max)`` form a mask; the box is the bounding rectangle
    (x, y, x + w, y + h) of its largest external contour (by contour area, the first on ties);
    a mask without contour gives :data:`NO_BOX`.
    """
    mask = (gray > int(th * int(gray.max()))).astype(np.uint8)
    contours = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[-2]
    if not contours:
        return NO_BOX
    x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
    return float(x), float(y), float(x + w), float(y + h)


def boxes_from_gray(gray: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Boxes (T, 4) of one uint8 map at each threshold; thresholds giving the same integer cut
    share one contour search."""
    peak = int(gray.max())
    found: dict[int, tuple[float, float, float, float]] = {}
    boxes = np.empty((len(thresholds), 4), dtype=np.float64)
    for t, th in enumerate(thresholds):
        cut = int(th * peak)
        if cut not in found:
            found[cut] = box_from_gray(gray, th)
        boxes[t] = found[cut]
    return boxes


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray, published: bool = False) -> np.ndarray:
    """IoU (N, M) of boxes (N, 4) and (M, 4), each (x0, y0, x1, y1) in pixel edges (area (x1-x0)(y1-y0)).

    Correct (default): intersection widths clamped at 0, a degenerate box has area 0, and a pair
    whose union is 0 scores 0. ``published=True``: the published formula, intersection not
    clamped (two boxes apart on both axes multiply two negative widths into a positive "overlap")
    and no guard on the union (0/0 gives NaN, which never counts as a hit).
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(1, -1, 4)
    inter_w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    inter_h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    if published:
        inter = inter_w * inter_h
        area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
        area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
        union = area_a + area_b - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            return inter / union
    inter = np.clip(inter_w, 0, None) * np.clip(inter_h, 0, None)
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _best_iou(box: Sequence[float] | np.ndarray, gt_boxes: np.ndarray, published: bool) -> np.ndarray:
    """Best IoU over the GT boxes of each predicted box (rows of ``box``); NaN counts as 0."""
    if len(gt_boxes) == 0:
        return np.zeros(np.asarray(box).reshape(-1, 4).shape[0])
    return np.nan_to_num(box_iou(np.asarray(box).reshape(-1, 4), gt_boxes, published), nan=0.0).max(axis=1)


@dataclasses.dataclass
class ImageResult:
    box: tuple[float, float, float, float]
    """The box at the threshold th."""
    ious: dict[str, float]
    """Its best IoU over the GT boxes, under each IoU ('correct', 'published')."""
    sweep_hits: np.ndarray
    """Per sweep threshold: whether that threshold's box hits (IoU >= 0.5, the scores' IoU)."""


class LocalizationScores:
    """Accumulates the per-image results of an evaluation; :meth:`summary` gives the metrics.

    ``th``: the CAM threshold of top-1 and GT-known localization (published default 0.25);
    ``sweep``: the thresholds MaxBoxAcc tries; ``iou_mode``: 'correct' or 'published', the IoU
    behind every headline metric. The top-1 localization under the other IoU formula is kept too,
    on the same GT boxes, so a result shows what the formula alone changes: in a run on the
    corrected boxes, ``top1_loc_published_iou`` is the published formula on those boxes, not the
    published result (that is ``top1_loc`` of a run with the published formula and boxes).
    """

    def __init__(self, th: float, sweep: Sequence[float], iou_mode: str = "correct",
                 iou_threshold: float = 0.5) -> None:
        if iou_mode not in IOU_MODES:
            raise ValueError(f"iou_mode must be one of {IOU_MODES}, got {iou_mode!r}")
        self.th = th
        self.sweep = np.asarray(sweep, dtype=np.float64)
        self.iou_mode = iou_mode
        self.iou_threshold = iou_threshold
        self.count = 0
        self.top1 = 0
        self.top5 = 0
        self.top1_loc = {mode: 0 for mode in IOU_MODES}
        self.gt_known = 0
        self.sweep_hits = np.zeros(len(self.sweep), dtype=np.int64)

    def measure(self, gray_cam: np.ndarray, gt_boxes: np.ndarray) -> ImageResult:
        """The boxes and IoUs of one image, from the uint8 CAM of its ground-truth class and its
        GT boxes (n, 4) in crop pixels. Reads only the settings, so threads may call it at once."""
        box = box_from_gray(gray_cam, self.th)
        ious = {mode: float(_best_iou(box, gt_boxes, mode == "published")[0]) for mode in IOU_MODES}
        swept = np.zeros(len(self.sweep), dtype=bool)
        if len(self.sweep):
            best = _best_iou(boxes_from_gray(gray_cam, self.sweep), gt_boxes, self.iou_mode == "published")
            swept = best >= self.iou_threshold
        return ImageResult(box, ious, swept)

    def record(self, top1_correct: bool, top5_correct: bool, result: ImageResult) -> None:
        """Count one image: its classification and :meth:`measure`'s result. The CAM measured is
        the ground-truth class's: for a correct top-1 prediction it is the predicted class's CAM
        (the published one); otherwise top-1 localization fails whatever the map."""
        hit = {mode: result.ious[mode] >= self.iou_threshold for mode in IOU_MODES}
        self.count += 1
        self.top1 += bool(top1_correct)
        self.top5 += bool(top5_correct)
        for mode in IOU_MODES:
            self.top1_loc[mode] += bool(top1_correct) and hit[mode]
        self.gt_known += hit[self.iou_mode]
        self.sweep_hits += result.sweep_hits

    def add(self, top1_correct: bool, top5_correct: bool, gray_cam: np.ndarray, gt_boxes: np.ndarray) -> ImageResult:
        """:meth:`measure` then :meth:`record` one image; returns its result."""
        result = self.measure(gray_cam, gt_boxes)
        self.record(top1_correct, top5_correct, result)
        return result

    def summary(self) -> dict:
        """Metrics in percent: top1, top5, top1_loc, gt_known_loc, max_box_acc (and the threshold
        reaching it), top1_loc under each IoU, the image count and the settings."""
        def percent(hits: float) -> float:
            return 100.0 * hits / self.count if self.count else math.nan

        best = int(np.argmax(self.sweep_hits)) if len(self.sweep) else None
        return {
            "images": self.count,
            "top1": percent(self.top1),
            "top5": percent(self.top5),
            "top1_loc": percent(self.top1_loc[self.iou_mode]),
            "gt_known_loc": percent(self.gt_known),
            "max_box_acc": percent(int(self.sweep_hits[best])) if best is not None else math.nan,
            "max_box_acc_threshold": float(self.sweep[best]) if best is not None else None,
            "top1_loc_correct_iou": percent(self.top1_loc["correct"]),
            "top1_loc_published_iou": percent(self.top1_loc["published"]),
            "iou": self.iou_mode,
            "th": self.th,
        }
