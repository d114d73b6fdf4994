"""Test harnesses shared by the test suite and the benchmarks."""
