"""CIFAR held on the training device (``--data_on_device``): uint8 images copied there once and
cropped, flipped and normalised there in one gather per batch."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Subset

from comixup.data.datasets import CIFAR_CLASSES, DataError, dataset_info
from comixup.data.loaders import epoch_generator, epoch_order


def draw_crops_and_flips(count: int, padding: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Random-crop offsets and flips for ``count`` images, as RandomCrop(size, padding) +
    RandomHorizontalFlip draw them: (top, left) each uniform in 0..2*padding (offsets in the
    padded image; ``padding`` is no shift) and flip True with probability 1/2. CPU int64 / bool."""
    top = torch.randint(0, 2 * padding + 1, (count,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (count,), generator=generator)
    flip = torch.rand(count, generator=generator) < 0.5
    return top, left, flip


def crop_flip_normalise(images: Tensor, top: Tensor, left: Tensor, flip: Tensor, padding: int,
                        mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Augment and normalise a uint8 batch (B, H, W, C) on its own device, in one gather.

    Each image is zero-padded by ``padding`` on every side, cropped back to H x W at (top[i],
    left[i]) in the padded image, mirrored left-right where flip[i], then turned into float32
    (B, C, H, W) as ToTensor + Normalize(mean, std) do (x / 255, minus mean, over std). With
    top = left = padding and no flip the result equals the test transform exactly, and any
    offsets/flips equal torchvision's RandomCrop(padding=padding) + hflip with those parameters.
    """
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(f"images must be a uint8 batch (B, H, W, C), got {images.dtype} {tuple(images.shape)}")
    batch, height, width, _ = images.shape
    device = images.device
    top, left, flip = top.to(device), left.to(device), flip.to(device)
    if padding > 0:
        images = F.pad(images, (0, 0, padding, padding, padding, padding))
    rows = top.view(-1, 1) + torch.arange(height, device=device)
    columns = torch.arange(width, device=device)
    columns = torch.where(flip.view(-1, 1), width - 1 - columns, columns) + left.view(-1, 1)
    picked = images[torch.arange(batch, device=device).view(-1, 1, 1), rows.view(batch, height, 1),
                    columns.view(batch, 1, width)]
    # The same float32 operations, in the same order, as ToTensor and Normalize.
    x = picked.permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return x.sub(mean_t).div(std_t)


class DeviceLoader:
    """Batches of a CIFAR split made on ``device`` from uint8 images held there (--data_on_device).

    The split (B, H, W, C uint8, 3 KB per image) is copied to the device once. Each epoch
    (:meth:`set_epoch`) a training loader draws a permutation from (seed, epoch) alone, the same
    on every rank, and takes this rank's share as DistributedSampler does (padded to a multiple
    of world_size, then every world_size-th item from its rank); its crops and flips
    (:func:`draw_crops_and_flips`) come from (seed, epoch, rank). An evaluation loader
    (``train=False``) keeps the data set order, does not augment, and takes every
    world_size-th image from its rank on (no padding). Iterating yields (images float32 (B, C,
    H, W) normalised, labels int64 (B,)) on the device; the last batch may be partial, as with
    :func:`get_loaders`.
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, mean: Sequence[float],
                 std: Sequence[float], device: torch.device | str, train: bool, padding: int = 0,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise DataError(f"DeviceLoader needs uint8 images (N, H, W, C), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise DataError(f"DeviceLoader got {labels.shape[0] if labels.dim() else 0} labels for "
                            f"{images.shape[0]} images")
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1; got {batch_size}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank must lie in [0, world_size) = [0, {world_size}); got {rank}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.train = train
        self.padding = padding if train else 0
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.skip_batches = 0

    def __repr__(self) -> str:
        return (f"DeviceLoader({len(self.images)} images on {self.device}, batch_size={self.batch_size}, "
                f"train={self.train}, rank={self.rank}/{self.world_size})")

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Use epoch ``epoch``'s order and augmentation from the next iteration on, leaving out its
        first ``skip_batches`` batches (already trained on before a mid-epoch checkpoint)."""
        self.epoch, self.skip_batches = epoch, skip_batches

    def _local_indices(self) -> Tensor:
        size = len(self.images)
        if not self.train:
            return torch.arange(self.rank, size, self.world_size)
        return epoch_order(size, self.seed, self.epoch, self.rank, self.world_size)

    def __len__(self) -> int:
        if self.train:
            local = -(-len(self.images) // self.world_size)
        else:
            local = len(range(self.rank, len(self.images), self.world_size))
        return -(-local // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        indices = self._local_indices()
        if self.train:
            top, left, flip = draw_crops_and_flips(len(indices), self.padding,
                                                   epoch_generator(self.seed, self.epoch, self.rank))
        else:
            top = left = torch.zeros(len(indices), dtype=torch.int64)
            flip = torch.zeros(len(indices), dtype=torch.bool)
        indices, top, left, flip = (t.to(self.device) for t in (indices, top, left, flip))
        for start in range(self.skip_batches * self.batch_size if self.train else 0, len(indices), self.batch_size):
            part = slice(start, start + self.batch_size)
            batch = indices[part]
            images = crop_flip_normalise(self.images[batch], top[part], left[part], flip[part], self.padding,
                                         self.mean, self.std)
            yield images, self.labels[batch]


def _uint8_split(dataset: Dataset, what: str) -> tuple[Tensor, Tensor]:
    """(images N x H x W x C uint8, labels) of a torchvision CIFAR split or a Subset of one."""
    indices = None
    base = dataset
    if isinstance(base, Subset):
        indices = list(base.indices)
        base = base.dataset
    data = getattr(base, "data", None)
    targets = getattr(base, "targets", None)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 4 or targets is None:
        raise DataError(f"--data_on_device needs CIFAR-style data held in memory as uint8 (N, H, W, C); the "
                        f"{what} set is {type(base).__name__} (use cifar10 or cifar100)")
    images = torch.from_numpy(data)
    labels = torch.as_tensor(targets, dtype=torch.int64)
    if indices is not None:
        chosen = torch.as_tensor(indices, dtype=torch.int64)
        images, labels = images[chosen], labels[chosen]
    return images, labels


def get_device_loaders(dataset: str, train_set: Dataset, valid_set: Dataset | None, test_set: Dataset,
                       batch_size: int, device: torch.device | str, seed: int = 0, rank: int = 0,
                       world_size: int = 1) -> tuple[DeviceLoader, DeviceLoader | None, DeviceLoader]:
    """(train, valid or None, test) :class:`DeviceLoader` s for the CIFAR sets of
    :func:`get_datasets` (labels_per_class subsets included): the data set's RandomCrop padding,
    flips and mean/std for training, normalisation only for validation and test. ``rank`` /
    ``world_size`` shard them as :func:`get_loaders` does under DDP. DataError for other data sets."""
    info = dataset_info(dataset)
    if dataset not in CIFAR_CLASSES:
        raise DataError(f"--data_on_device supports {', '.join(CIFAR_CLASSES)} (held in memory as uint8), "
                        f"not {dataset}")
    common = dict(batch_size=batch_size, mean=info.mean, std=info.std, device=device, seed=seed, rank=rank,
                  world_size=world_size)
    train = DeviceLoader(*_uint8_split(train_set, "training"), train=True, padding=info.crop_padding, **common)
    valid = DeviceLoader(*_uint8_split(valid_set, "validation"), train=False, **common) if valid_set is not None \
        else None
    test = DeviceLoader(*_uint8_split(test_set, "test"), train=False, **common)
    return train, valid, test
