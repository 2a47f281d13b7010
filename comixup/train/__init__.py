"""The training run behind ``main.py``: command line and config files, the multi-phase recipe, the
per-batch loss of every method, the run state and its epochs, checkpoints, the experiment folder,
its log, and torchrun."""
