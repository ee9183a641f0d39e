"""Test helpers, as ordinary modules: tests/conftest.py keeps only fixtures, which call into these."""
