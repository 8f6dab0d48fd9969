"""The suite-wide network guard really blocks outside connections and allows loopback."""

from __future__ import annotations

import os
import socket

import pytest
from conftest import NetworkAccessError


def test_outside_connections_fail_and_hub_libraries_are_offline() -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(NetworkAccessError):
        sock.connect(("93.184.216.34", 443))


def test_loopback_connections_are_allowed() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
