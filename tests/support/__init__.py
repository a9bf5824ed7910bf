"""Helpers for tests: real services (services.py), waiting for conditions (waiting.py), nodes as processes (nodes.py).

Import them as ``from tests.support.waiting import wait_for`` (tests/conftest.py puts the repository root on
``sys.path``).
"""
