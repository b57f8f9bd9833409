"""Daemon sessions of one connector side, one per tenant (vLLM cache_salt)."""

from __future__ import annotations

import logging
import time
from typing import Optional

from .. import _core
from .._client import Client
from ..errors import KvblockdError

log = logging.getLogger("kvblockd.vllm")


class TenantSessions:
    """Lazily connected sessions keyed by tenant salt; a lost daemon is retried at most every ``retry_s``.

    Each session says hello with ``shape`` and its tenant salt and, on the
    worker side, registers ``region``. ``get`` returns None while the daemon
    is unreachable: callers treat that as a miss (nothing stored, nothing
    loaded), never as an error of the engine.
    """

    def __init__(self, socket: str, shape: _core.BlockShape, *, region: Optional[_core.KvRegion] = None,
                 timeout_s: float = 10.0, retry_s: float = 2.0, name: str = "vllm") -> None:
        self.socket = socket
        self.shape = shape
        self.region = region
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.name = name
        self._clients: dict[int, Client] = {}
        self._down_since: Optional[float] = None

    def get(self, tenant: int) -> Optional[Client]:
        c = self._clients.get(tenant)
        if c is not None and c.is_open:
            return c
        if c is not None:
            self.drop(tenant)
        if self._down_since is not None and time.monotonic() - self._down_since < self.retry_s:
            return None
        try:
            c = Client(self.socket, timeout=self.timeout_s)
            c.hello(self.shape, tenant_salt=tenant, client_name=f"kvblockd-{self.name}")
            if self.region is not None:
                c.register_kv(self.region)
        except KvblockdError as e:
            if self._down_since is None:
                log.warning("kvblockd: no session with the daemon at %s (%s); running without it", self.socket, e)
            self._down_since = time.monotonic()
            return None
        if self._down_since is not None:
            log.info("kvblockd: connected again to %s", self.socket)
        self._down_since = None
        self._clients[tenant] = c
        return c

    def failed(self, tenant: int, error: KvblockdError) -> None:
        """A call failed: a lost connection is dropped (retried later), other errors keep it."""
        c = self._clients.get(tenant)
        if c is not None and not c.is_open:
            log.warning("kvblockd: lost the daemon (%s); requests fall back to recompute", error)
            self.drop(tenant)
            self._down_since = time.monotonic()

    def drop(self, tenant: int) -> None:
        c = self._clients.pop(tenant, None)
        if c is not None:
            c.close()

    def close(self) -> None:
        for tenant in list(self._clients):
            self.drop(tenant)
