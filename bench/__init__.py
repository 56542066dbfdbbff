"""pytest-benchmark suites, one bench_<stem>.py per op family (run: python -m pytest bench).

A package so that bench/conftest.py is imported as bench.conftest and never shadows the
tests' own conftest module when both folders run in one session.
"""
