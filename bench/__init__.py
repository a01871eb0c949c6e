"""Benchmarks of the running app (not tests): ``python -m bench.relay`` measures the relay.

Kept out of ``tests/`` because they take minutes, load both cores and report figures rather
than pass or fail; see ``bench/README.md``.
"""

from __future__ import annotations
