"""Shared unit-test fixtures."""

import pytest

from scripted_server import scripted_server


@pytest.fixture
def server():
    """A scripted HTTP server on 127.0.0.1 (scripted_server.py): `server.url(path)`, `.script[path]`, `.requests`."""
    with scripted_server() as srv:
        yield srv
