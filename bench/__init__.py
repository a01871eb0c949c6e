"""Benchmarks of the running app (not tests): ``python -m bench.relay`` measures the relay,
``python -m bench.workers`` the channel layer and a second worker, ``python -m bench.page`` the
chat page; the first two against the baseline relay (``bench.baseline``) in the same run.

Kept out of ``tests/`` because they take minutes, load both cores and report figures rather
than pass or fail; see ``bench/README.md``.
"""

from __future__ import annotations
