"""Soak run by `make soak`, not collected by `make test` (file name): the
rebalance test of tests/test_reliability.py, repeated. It is the test that
found three ways a rebalance lost events (docs/RELIABILITY.md); one run is in
the default suite, repeats catch rarer interleavings.
"""

from tests.test_reliability import test_rebalance_when_one_of_two_workers_stops  # noqa: F401
