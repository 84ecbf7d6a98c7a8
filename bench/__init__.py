"""Benchmarks of the park node on loopback (``python -m bench``); see bench/README.md."""
