"""Benchmarks of what telemetry costs a request; run them with `python -m bench`."""
