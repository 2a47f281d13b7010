"""Weakly supervised localization and background robustness of ImageNet classifiers (the published
``comix-localization`` evaluation), on CPU or GPU.

    python localization.py [--model_name NAME ...] [--checkpoint [NAME=]PATH ...]
                           [--data_name clean|rep|noise ...] [--data [NAME=]DIR ... --boxes FILE] [--th 0.25]
    python localization.py build --data DIR [--boxes FILE] --kind noise|rep|clean --out DIR [--seed 0]
    python localization.py tables [--root_dir result]
    python localization.py figure --model_name NAME ... --data_name clean --images 0 1 2 --out FIG.png

The command lives in :mod:`comixup.localization.evaluate`; ``python localization.py --help``
lists its flags.
"""
import sys

if __name__ == "__main__":
    try:
        from comixup.localization.evaluate import main
    except ImportError as err:  # OpenCV missing: one line naming the extra
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(main())
