"""Data sets and loaders for training, and the one-off Tiny-ImageNet validation re-layout.

Run as a script, ``python load_data.py --data_dir ./data/tiny-imagenet-200`` moves the raw
Tiny-ImageNet-200 validation images into one folder per class so that ``ImageFolder`` can read
them (running it again is harmless). Imported, it offers the data sets and loaders of
:mod:`comixup.data`.
"""
import sys

from comixup.data.datasets import (
    DATASETS,
    DataError,
    DatasetInfo,
    check_data_dir,
    class_balanced_split,
    dataset_info,
    dataset_transforms,
    get_datasets,
)
from comixup.data.device_loader import DeviceLoader, get_device_loaders
from comixup.data.loaders import EpochSampler, get_loaders, get_test_loader, get_train_loader, shutdown_workers
from comixup.prepare.tiny_imagenet import main, relayout_tiny_imagenet_val

__all__ = ["DATASETS", "DataError", "DatasetInfo", "check_data_dir", "class_balanced_split", "dataset_info",
           "dataset_transforms", "get_datasets", "DeviceLoader", "get_device_loaders", "EpochSampler", "get_loaders",
           "get_test_loader", "get_train_loader", "shutdown_workers", "relayout_tiny_imagenet_val", "main"]

if __name__ == "__main__":
    sys.exit(main())
