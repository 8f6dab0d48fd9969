"""Suite-wide guards: the tests never reach the network or a model hub, and CI never skips.

Hub libraries are put in offline mode, and any socket connection to a non-loopback address fails
the test that makes it (the integration tests' ComfyUI servers listen on 127.0.0.1). With
``OIR_FAIL_ON_SKIP=1`` (set by ``.ci/run``) a skipped test is reported as failed, with its reason:
locally a missing ComfyUI or Chromium skips, in CI it must not. Ctrl-C reaches the processes the
tests start however the suite itself was launched.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
from typing import Any

import pytest

for _variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_variable] = "1"

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    # A shell starts a background job with Ctrl-C ignored, and every process it starts inherits
    # that, so the oir-edit processes the Ctrl-C tests signal would never see it. A handler (unlike
    # an ignored signal) is reset by exec, so each child starts with Python's own Ctrl-C handling.
    signal.signal(signal.SIGINT, signal.default_int_handler)

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkAccessError(RuntimeError):
    """A test tried to leave the machine."""


def _is_local(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX paths
        return True
    host = address[0] if isinstance(address, tuple) and address else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: resolving it would already be network access


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if not _is_local(address):
        raise NetworkAccessError(f"tests must not use the network (tried to connect to {address!r})")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    if not _is_local(address):
        raise NetworkAccessError(f"tests must not use the network (tried to connect to {address!r})")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> Any:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


FAIL_ON_SKIP = os.environ.get("OIR_FAIL_ON_SKIP", "").strip() not in ("", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if FAIL_ON_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped where OIR_FAIL_ON_SKIP=1 forbids skips: {reason}"


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if FAIL_ON_SKIP and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped where OIR_FAIL_ON_SKIP=1 forbids skips: {reason}"
