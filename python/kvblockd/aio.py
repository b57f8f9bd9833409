"""asyncio client: the same requests as :class:`kvblockd.Client`, awaited.

The C++ client library's io thread parks each outcome in a queue and makes
an eventfd readable; this client watches that fd with ``loop.add_reader``
and resolves the futures from there. Offload and onboard resolve from the
notification the daemon pushes when the copy ends. No polling, no thread or
task per request: one fd per session on the event loop.

Cancelling an awaiting task does not cancel the daemon's work: the request
still ends (and its outcome is dropped).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Iterable, Optional, TypeVar

from . import _core
from ._client import default_socket_path
from ._types import (HelloInfo, LookupResult, RequestStatus, WorkerPrefix, ints, to_hello, to_locate, to_lookup,
                     to_stats, to_status)
from .errors import Cancelled, error_for

T = TypeVar("T")


def _identity(value: Any) -> Any:
    return value


class AsyncClient:
    """An asyncio session with kvblockd, bound to the running loop. Create with ``await AsyncClient.connect()``."""

    def __init__(self, path: Optional[str] = None, *, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        self.path = path or default_socket_path()
        self._loop = loop or asyncio.get_running_loop()
        self._conn = _core.Connection(self.path)
        self._futures: dict[int, tuple[asyncio.Future[Any], Callable[[Any], Any]]] = {}
        self._regions: list[_core.KvRegion] = []
        self._closed = False
        self._loop.add_reader(self._conn.event_fd, self._on_outcomes)

    @classmethod
    async def connect(cls, path: Optional[str] = None) -> "AsyncClient":
        """Connects to ``path`` (default: the daemon's default socket). A Unix socket connect does not wait."""
        return cls(path)

    # ---- plumbing ----
    def _on_outcomes(self) -> None:
        for ticket, code, message, value in self._conn.drain_async():
            entry = self._futures.pop(ticket, None)
            if entry is None:
                continue
            future, convert = entry
            if future.done():  # the awaiting task was cancelled
                continue
            if code != 0:
                future.set_exception(error_for(code, message))
            else:
                future.set_result(convert(value))

    def _submit(self, ticket: int, convert: Callable[[Any], T]) -> "asyncio.Future[T]":
        future: asyncio.Future[T] = self._loop.create_future()
        if self._closed:
            future.set_exception(Cancelled("session closed by the client"))
            return future
        self._futures[ticket] = (future, convert)
        return future

    # ---- requests ----
    async def hello(self, shape: Optional[_core.BlockShape] = None, *, tenant_salt: int = 0,
                    client_name: str = "kvblockd-python") -> HelloInfo:
        shape = shape if shape is not None else _core.BlockShape(0, 0, 0)
        return await self._submit(self._conn.hello(client_name, tenant_salt, shape, True), to_hello)

    async def register_kv(self, region: _core.KvRegion) -> None:
        await self._submit(self._conn.register_kv(region, True), _identity)
        self._regions.append(region)

    async def lookup(self, hashes: Iterable[int], *, pin: bool = False) -> LookupResult:
        return await self._submit(self._conn.lookup(ints(hashes), pin, True), to_lookup)

    async def locate(self, hashes: Iterable[int]) -> list[WorkerPrefix]:
        return await self._submit(self._conn.locate(ints(hashes), True), to_locate)

    async def offload(self, blocks: Iterable[int], hashes: Iterable[int]) -> None:
        """Resolves when the daemon's notification says the blocks are registered."""
        await self._submit(self._conn.offload(ints(blocks), ints(hashes), True), _identity)

    async def onboard(self, blocks: Iterable[int], hashes: Iterable[int]) -> None:
        """Resolves when the daemon's notification says the engine blocks hold the data."""
        await self._submit(self._conn.onboard(ints(blocks), ints(hashes), True), _identity)

    async def release(self, hashes: Optional[Iterable[int]] = None) -> int:
        return await self._submit(self._conn.release(ints(hashes or []), True), _identity)

    async def status(self, request_id: int) -> RequestStatus:
        return await self._submit(self._conn.status(request_id, True), to_status)

    async def wait(self, request_id: int, timeout_ms: int) -> RequestStatus:
        return await self._submit(self._conn.wait(request_id, timeout_ms, True), to_status)

    async def stats(self) -> dict[str, Any]:
        return await self._submit(self._conn.stats(True), to_stats)

    async def config(self) -> str:
        return await self._submit(self._conn.config(True), _identity)

    async def drain(self) -> None:
        await self._submit(self._conn.drain(True), _identity)

    async def bye(self) -> None:
        await self._submit(self._conn.bye(True), _identity)

    # ---- lifetime ----
    @property
    def is_open(self) -> bool:
        return self._conn.is_open

    @property
    def in_flight(self) -> int:
        """Requests awaiting their outcome."""
        return len(self._futures)

    async def close(self) -> None:
        """Closes the connection; requests still awaited end with kvblockd.Cancelled. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._conn.close()
        self._loop.remove_reader(self._conn.event_fd)
        futures, self._futures = self._futures, {}
        for future, _ in futures.values():
            if not future.done():
                future.set_exception(Cancelled("session closed by the client"))

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
