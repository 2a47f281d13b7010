"""Shared helpers of every subsystem, importing no algorithm: atomic files, run logs, metrics,
tensor helpers and how a command starts and ends (exit statuses, the one-line error, signals)."""
