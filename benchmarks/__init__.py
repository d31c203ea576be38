"""Benchmarks: scripts that print figures (`make bench`). Not tests: nothing here asserts a timing."""
