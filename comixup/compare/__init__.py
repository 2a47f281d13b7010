"""Run comparison: one table (and optionally a figure) from experiment folders; ``compare.py`` is
its command, ``run_log.py`` reads an experiment folder."""
