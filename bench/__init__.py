"""Benchmark scripts: ``python bench/<name>.py --help``. Each prints its figures; none is a test."""
