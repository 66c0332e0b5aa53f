"""Benchmarks (not part of the test suite). Run ``python -m bench.web_chat --help``."""
