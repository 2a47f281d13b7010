"""Evaluate several checkpoints on one data set: top-1 error, expected calibration error, NLL,
FGSM and CIFAR-C error as one table, and the reliability diagrams side by side.

    python evaluate.py CKPT [CKPT ...] --dataset cifar100 --data_dir DIR [--names NAME ...]
        [--fgsm 8] [--corruption_dir DIR] [--diagram calibration.png] [--format text|markdown|csv]

The command lives in :mod:`comixup.evaluation.table`; ``python evaluate.py --help`` lists its flags.
"""
import sys

from comixup.evaluation.table import main

if __name__ == "__main__":
    sys.exit(main())
