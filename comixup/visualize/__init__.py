"""Pictures of mixed batches; ``visualize.py`` is its command."""
