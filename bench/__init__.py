"""The benchmark harness: `python -m bench` measures our drivers, the raw floors and the peers.

This package is imported by every worker process the harness starts (the
jobs record themselves through `bench.probe`), so it imports nothing here.
"""
