"""Helpers shared by the test suite and the chaos benchmarks (bench/chaos.py); never imported by the app."""
