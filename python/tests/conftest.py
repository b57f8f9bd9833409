"""Fixtures: a real kvblockd process per test module (fresh temp socket)."""

from __future__ import annotations

import itertools
import os
from typing import Iterator

import pytest

import kvblockd
from kvblockd.testing import DaemonProcess

SHAPE = dict(num_layers=2, page_size=16, inner_dim=64, outer_dim=2, dtype="f16")
_salts = itertools.count(1000 + os.getpid() * 7919)


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    d = DaemonProcess()
    yield d
    d.stop()


@pytest.fixture
def shape() -> kvblockd.BlockShape:
    return kvblockd.BlockShape(**SHAPE)


@pytest.fixture
def salt() -> int:
    """A tenant salt of its own for each test: tests on one daemon never see each other's blocks."""
    return next(_salts)


@pytest.fixture
def client(daemon: DaemonProcess, shape: kvblockd.BlockShape, salt: int) -> Iterator[kvblockd.Client]:
    with kvblockd.connect(daemon.socket, timeout=20) as c:
        c.hello(shape, tenant_salt=salt, client_name="pytest")
        yield c
