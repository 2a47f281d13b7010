"""Rebuild successors_reference.npz from the full file of the official successors' outputs.

    python tests/data/make_successors_fixture.py SUCCESSORS.pt

SUCCESSORS.pt is a torch-saved dict (tensors, numbers, bools, strings, lists) of what the official
FMix (ecs-vlc/FMix), SaliencyMix (SaliencyMix/SaliencyMix), GuidedMixup (3neutronstar/GuidedMixup) and
ResizeMix (OpenMixup) code returned on 16 CIFAR-10 images and fixed seeds. The tests read this compact
copy, which keeps every key but two, losslessly:

- ``images/normalised`` is left out: ``Normalize(mean, std)(uint8 / 255)`` of the stored pixels gives it
  back bit for bit (checked here);
- ``resizemix/<variant>/mixed_uint8`` is stored as ``.../mixed_delta``, its difference from the
  unmixed images modulo 256 (zero outside the pasted box, so it packs small).

Lists become arrays and ``meta/commits`` becomes ``repo@commit`` strings.
"""
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T


def main(source: str) -> None:
    data = torch.load(source, weights_only=True)
    pixels = data["images/uint8_hwc_rgb"].permute(0, 3, 1, 2)
    rebuilt = T.Normalize(data["images/mean"], data["images/std"])(pixels.float().div(255))
    assert torch.equal(rebuilt, data["images/normalised"]), "the normalised images no longer rebuild bit for bit"
    out = {}
    for key, value in data.items():
        if key == "images/normalised" or key in ("meta/patches", "meta/versions"):
            continue
        if key == "meta/commits":
            out[key] = np.array([f"{repo}@{commit}" for repo, commit in value.items()])
        elif key.endswith("/mixed_uint8"):
            delta = value.numpy() - pixels.numpy()[None]  # uint8 arithmetic wraps modulo 256
            out[key.replace("/mixed_uint8", "/mixed_delta")] = delta
        elif isinstance(value, torch.Tensor):
            out[key] = value.numpy()
        else:
            out[key] = np.asarray(value)
    np.savez_compressed(Path(__file__).with_name("successors_reference.npz"), **out)


if __name__ == "__main__":
    main(sys.argv[1])
