"""Evaluation of trained classifiers beyond top-1: calibration (reliability diagrams), FGSM
robustness and common-corruption error (CIFAR-10-C / CIFAR-100-C), for ``main.py --evaluate`` and
for several checkpoints side by side; ``evaluate.py`` is its command."""
