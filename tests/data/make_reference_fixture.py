"""Rebuild reference_problems.npz from a full file of reference labelling problems.

    python tests/data/make_reference_fixture.py SOLVER_PROBLEMS.pt

SOLVER_PROBLEMS.pt is a torch-saved dict: ``params`` (the solver settings beta, gamma, thres,
niter) and ``problems``, a list of 72 labelling problems (48 of 4x4 blocks, 12 of 2x2, 12 of
8x8), each with its inputs (block costs, compatibility A, initial labelling, saliency maps and
saliency-peak distances) and the published solver's answers to it (mask and both objectives).
The full file is not part of the repository, so the tests read this compact copy: block costs,
A, the initial labelling, the published masks (as 2 x mask, uint8) and objectives, plus the
saliency maps and peak distances of one problem per grid size (the rest are left out).
"""
import sys
from pathlib import Path

import numpy as np
import torch

SALIENCY_KEPT = (0, 48, 60)  # problems 0-47 are 4x4, 48-59 2x2, 60-71 8x8


def main(source: str) -> None:
    data = torch.load(source, weights_only=False)
    out = {"beta": data["params"]["beta"], "gamma": data["params"]["gamma"], "thres": data["params"]["thres"],
           "niter": data["params"]["niter"]}
    for k, p in enumerate(data["problems"]):
        out[f"p{k}_cost"] = p["cost"].numpy().astype(np.float32)
        out[f"p{k}_A"] = p["A"].numpy().astype(np.float32)
        out[f"p{k}_init"] = p["init"].numpy().astype(np.uint8)
        out[f"p{k}_mask2"] = (2 * p["published_mask"]).round().numpy().astype(np.uint8)
        out[f"p{k}_objective"] = np.float64(p["published_objective"])
        out[f"p{k}_objective_thres"] = np.float64(p["published_objective_thres"])
        if k in SALIENCY_KEPT:
            out[f"p{k}_saliency"] = p["saliency"].numpy().astype(np.float32)
            out[f"p{k}_a_dist"] = p["a_dist"].numpy().astype(np.float32)
    out["count"] = len(data["problems"])
    np.savez_compressed(Path(__file__).with_name("reference_problems.npz"), **out)


if __name__ == "__main__":
    main(sys.argv[1])
