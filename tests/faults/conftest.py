"""Fault tests run against a redis-server of their own: ``private_redis`` (tests/conftest.py)."""
