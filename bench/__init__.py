"""Benchmarks of eskit, run with ``python -m bench``; see ``bench/README.md``."""
