"""Helpers shared by several test modules (servers, flows, fixtures); test modules import from here, never
from one another (tests/architecture/test_tests.py)."""
