"""Benchmarks (make bench); never run by the tests."""
