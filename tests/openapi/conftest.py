"""A local stack for the outside-in checks of `GET /openapi.json`, with outbound traffic held to loopback.

Generated inputs can name any callback URL or http runnable endpoint. The stack and its pollers load
`sitecustomize` from a folder put first on PYTHONPATH: it refuses name lookups other than localhost and
connections to non-loopback addresses, so nothing a test generates leaves this machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.local_stack import ROOT, Stack, start_stack

GUARD_BANNER = "runplane-tests: outbound network limited to loopback"

GUARD = f'''
import ipaddress
import socket
import sys

_LOCAL_NAMES = {{None, "", "localhost", "ip6-localhost", "ip6-loopback"}}


def _literal(host):
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return None


def _local(host):
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    address = _literal(host)
    return host in _LOCAL_NAMES if address is None else address.is_loopback


def _refuse_lookup(host):
    raise socket.gaierror(socket.EAI_NONAME, f"{{host}}: lookups other than localhost are off in tests")


_getaddrinfo, _gethostbyname, _gethostbyname_ex = (
    socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex
)


def getaddrinfo(host, *args, **kwargs):
    if _local(host) or _literal(host) is not None:
        return _getaddrinfo(host, *args, **kwargs)
    return _refuse_lookup(host)


def gethostbyname(host):
    return _gethostbyname(host) if _local(host) else _refuse_lookup(host)


def gethostbyname_ex(host):
    return _gethostbyname_ex(host) if _local(host) else _refuse_lookup(host)


def _checked(address, family):
    if family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        raise ConnectionRefusedError(f"{{address[0]}}: connections beyond loopback are off in tests")


_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def connect(self, address):
    _checked(address, self.family)
    return _connect(self, address)


def connect_ex(self, address):
    _checked(address, self.family)
    return _connect_ex(self, address)


socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex = (
    getaddrinfo, gethostbyname, gethostbyname_ex
)
socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
print("{GUARD_BANNER}", file=sys.stderr, flush=True)
'''


def start_guarded_stack(folder: Path, **env: str) -> Stack:
    """`runplane local` in `folder`, its outbound traffic held to loopback (see the module docstring)."""
    guard = folder / "guard"
    guard.mkdir(parents=True)
    (guard / "sitecustomize.py").write_text(GUARD)
    pythonpath = os.pathsep.join([str(guard), str(ROOT)])
    stack = start_stack(folder / "state", PYTHONPATH=pythonpath, **env)
    stack.keep_draining_output()
    if GUARD_BANNER not in stack.banner:
        stack.stop()
        raise AssertionError("the network guard did not load in the stack:\n" + stack.banner)
    return stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack per module: a module's requests never see another module's data."""
    started = start_guarded_stack(tmp_path_factory.mktemp("stack"), RUNPLANE_SYNC_WAIT_SECONDS="5")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def document(stack: Stack) -> dict[str, Any]:
    """The OpenAPI document as served, fetched without a key."""
    reply = requests.get(stack.info["api_url"] + "/openapi.json", timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()
