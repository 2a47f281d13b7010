"""Helpers the tests share: runs of main.main, child processes, fakes and reference calls."""
