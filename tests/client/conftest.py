"""The running server (with the real broker) of test_cli, for every client test."""

from .test_cli import srv  # noqa: F401
