"""The training run behind ``main.py``: command line and config files, the multi-phase recipe, the
per-batch loss of every method, the run state, the loops (one training epoch, the one evaluation
pass, the epoch loop), checkpoints and the one way to rebuild a classifier from them, the
experiment folder, and torchrun."""
