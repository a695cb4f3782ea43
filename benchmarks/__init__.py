"""Benchmarks and evaluation harnesses; run them with ``make bench`` / ``make eval``."""
