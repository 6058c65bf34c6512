"""Project-wide test set-up: offline Hugging Face, and no network connection except to this machine."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _local_addresses() -> set[str]:
    out = {"localhost"}
    try:
        out.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        pass
    return out


_LOCAL = _local_addresses()


def _is_local(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX path
        return True
    host = address[0]
    if host in _LOCAL:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guarded_connect(self, address):
    if not _is_local(address):
        raise ConnectionRefusedError(f"tests may only connect to this machine, not {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(address):
        raise ConnectionRefusedError(f"tests may only connect to this machine, not {address!r}")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _no_remote_sockets(monkeypatch):
    """Every test: a connection to anything but this machine fails loudly."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    yield


def require_tool(available: bool, what: str) -> None:
    """Skip locally with a visible reason when an external tool is missing; fail under CI (``CI=true``)."""
    if available:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is required in CI but is not installed (see .ci/run)")
    pytest.skip(f"{what} not installed (CI installs it)")


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's AppTest leaves its temporary script registered as ``__main__``; worker processes started later
    (spawn re-imports ``__main__``) would then run that script and die. Put the real one back after every test."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if sys.modules.get("__main__") is not main:
        sys.modules["__main__"] = main
