"""Write tests/data/mixing_before_refactor.pt: mixed batches made by the mixers as they were before
the one-dialect refactor (commit ebdce2b), which tests/test_mixer_door.py compares today's with.

    git worktree add /tmp/before ebdce2b
    PYTHONPATH=/tmp/before python tests/data/make_mixing_fixture.py tests/data/mixing_before_refactor.pt
"""
import sys

import numpy as np
import torch

from comixup.core.tensors import to_one_hot
from comixup.data.synthetic import blob_saliency
from comixup.mixing import baselines, comix, puzzlemix

torch.manual_seed(0)
B, K = 8, 5
x = torch.randn(B, 3, 16, 16)
labels = torch.randint(0, K, (B,))
y = to_one_hot(labels, K)
sal = blob_saliency(B, 16)
mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
out = {"x": x, "labels": labels, "saliency": sal, "num_classes": K, "mean": list(mean), "std": list(std)}
out["mixup"] = baselines.input_mixup(x, y, alpha=1.0, rng=np.random.default_rng(1))
out["cutmix"] = baselines.cutmix(x, y, alpha=1.0, rng=np.random.default_rng(2))
layer, fn, my = baselines.ManifoldMix(2.0, rng=np.random.default_rng(3)).draw(y)
out["manifold"] = (torch.tensor(layer), fn(x), my)
out["puzzle"] = puzzlemix.PuzzleMix(mean=mean, std=std, rng=np.random.default_rng(4))(x, y, sal)
out["comix"] = comix.CoMixup(num_classes=K, m_part=3, rng=np.random.default_rng(5))(x, labels, sal)
grid_drawn = comix.CoMixup(num_classes=K, m_block_num=-1, m_part=8, rng=np.random.default_rng(6))
out["comix_grid_drawn"] = grid_drawn(x, labels, sal)
torch.save(out, sys.argv[1])
print({k: (v[0].shape if isinstance(v, tuple) else getattr(v, 'shape', v)) for k, v in out.items()})
