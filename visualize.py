"""Draw one batch mixed by Co-Mixup (or a baseline) as a three-row PNG: inputs, saliency, mixed images.

    python visualize.py --dataset cifar10 --data_dir ./data/cifar10 \
        --resume checkpoint/model_best.pth.tar --num_images 8 --out images/figure.png

The command lives in :mod:`comixup.visualize.mixed_batch`; ``python visualize.py --help`` lists
its flags.
"""
import sys

from comixup.visualize.mixed_batch import main

if __name__ == "__main__":
    sys.exit(main())
