"""Compare training runs: one table (and optionally a figure) from experiment folders.

    python compare.py experiments/ [more folders...] [--format text|markdown|csv] [--error]
        [--runs] [--split_by KEY ...] [--out FILE] [--plot curves.png]

The command lives in :mod:`comixup.compare.table`; ``python compare.py --help`` lists its flags.
"""
import sys

from comixup.compare.table import main

if __name__ == "__main__":
    sys.exit(main())
