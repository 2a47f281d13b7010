"""Weakly supervised localization and background robustness of ImageNet classifiers (the
published ``comix-localization`` evaluation): class activation maps, boxes, data sets, corrupted
sets, reports; ``localization.py`` is its command."""
