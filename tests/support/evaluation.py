"""What the calibration and robustness tests share: the definitions of ECE, its bins and FGSM written
out with numpy and plain torch (independent of the code under test), CIFAR-10 as [0, 1] tensors, a
CIFAR-C release written in its format, and a model trained and saved as the published main.py did."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from torchvision.datasets import CIFAR10

from comixup.data import cifar_c
from comixup.data.synthetic import write_cifar

from tests.support.published import save_published_checkpoint, trained_model

MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
TEST_PER_CLASS = 40  # 400 test images: one image is 0.25 points of error
CALIB_RE = re.compile(r"^\*\*Calib\*\* ECE (\d+\.\d\d) NLL (\d+\.\d{4}) Conf (\d+\.\d\d) \((\d+) bins\)$")
FGSM_RE = re.compile(r"^\*\*FGSM \*\* eps (\S+)/255 Prec@1 (\d+\.\d\d) Error@1 (\d+\.\d\d)$")


def reference_ece(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Guo et al.'s ECE in percent, with numpy: bins (lo, hi] of the top-1 softmax confidence."""
    probs = torch.softmax(logits.double(), dim=1).numpy()
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    right = predicted == labels.numpy()
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        members = (confidence > lo) & (confidence <= hi)
        if members.any():
            ece += members.mean() * abs(right[members].mean() - confidence[members].mean())
    return 100.0 * ece


def reference_bins(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> list[tuple[int, float | None]]:
    """Per confidence bin (lo, hi], with numpy: how many predictions fall in it and their accuracy."""
    probs = torch.softmax(logits.double(), dim=1).numpy()
    confidence, right = probs.max(axis=1), probs.argmax(axis=1) == labels.numpy()
    edges = np.linspace(0.0, 1.0, bins + 1)
    members = [(confidence > lo) & (confidence <= hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return [(int(m.sum()), float(right[m].mean()) if m.any() else None) for m in members]


def unnormalised_split(data_dir: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The split as [0, 1] tensors (no normalisation), read with torchvision directly."""
    dataset = CIFAR10(str(data_dir), train=train, download=False, transform=T.ToTensor())
    images, labels = zip(*[dataset[i] for i in range(len(dataset))], strict=True)
    return torch.stack(images), torch.tensor(labels)


def normalise(images: torch.Tensor) -> torch.Tensor:
    return (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def reference_fgsm_error(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float) -> float:
    """One signed-gradient step of eps/255 on the [0, 1] image, clamped, model in eval mode."""
    model.eval()
    x = images.clone().requires_grad_(True)
    loss = F.cross_entropy(model(normalise(x)), labels)
    (gradient,) = torch.autograd.grad(loss, x)
    adversarial = (images + eps / 255 * gradient.sign()).clamp(0, 1)
    with torch.no_grad():
        right = (model(normalise(adversarial)).argmax(1) == labels).float().mean().item()
    return 100.0 * (1 - right)


def write_release(folder: Path, images: np.ndarray, labels: np.ndarray, corruptions: dict[str, int]) -> Path:
    """A CIFAR-C folder in the release's format: per corruption the test images at 5 severities one
    after the other (uint8, N x 32 x 32 x 3), and labels.npy. Severity s darkens the images by
    ``shift`` x s grey levels, so each corruption and severity gives the model other inputs."""
    folder.mkdir(parents=True)
    np.save(folder / "labels.npy", np.tile(labels.astype(np.uint8), cifar_c.SEVERITIES))
    for name, shift in corruptions.items():
        levels = [np.clip(images.astype(np.int16) - shift * s, 0, 255).astype(np.uint8) for s in range(1, 6)]
        np.save(folder / f"{name}.npy", np.concatenate(levels))
    return folder



def make_published_run(root: Path) -> tuple[Path, Path, torch.nn.Module]:
    """A CIFAR-10 with 400 test images, and a trained model saved as the published main.py did:
    (data folder, checkpoint, the model in eval mode)."""
    data_dir = write_cifar(root / "data", "cifar10", train_per_class=6, test_per_class=TEST_PER_CLASS)
    with pytest.MonkeyPatch.context() as patch:
        import torchvision.datasets.cifar as cifar

        patch.setattr(cifar, "check_integrity", lambda fpath, md5=None: Path(fpath).is_file())
        model, optimizer = trained_model(data_dir)
    path = root / "published" / "checkpoint.pth.tar"
    path.parent.mkdir()
    save_published_checkpoint(path, model, optimizer)
    return data_dir, path, model.eval()


def eval_args(data_dir: Path, checkpoint: Path, *extra: str) -> list[str]:
    return ["--evaluate", "--log_off", "--resume", str(checkpoint), "--dataset", "cifar10", "--data_dir",
            str(data_dir), "--arch", "preactresnet18", "--initial_channels", "16", "--ngpu", "0", *extra]


