"""Resize an ImageNet copy for progressive-resizing training:

    python prepare_imagenet.py --src DIR --dst DIR --sizes 160 352

writes ``DST/<size>/{train,val}/<class>/<file>`` with the short side resized to each size (sides
truncated to whole pixels as the published resize step does). The
command lives in :mod:`comixup.prepare.imagenet`; ``python prepare_imagenet.py --help``
lists its flags.
"""
import sys

from comixup.prepare.imagenet import main

if __name__ == "__main__":
    sys.exit(main())
