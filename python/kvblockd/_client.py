"""Blocking client: one kvblockd session, plain calls.

Each call sends its request through the C++ client library (an io thread
there, without the GIL) and waits for the answer with the GIL released:
the reply, or for offload/onboard the notification the daemon pushes when
the copy ends. ``*_nowait`` forms return a :class:`Pending` at once.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Iterable, Optional, TypeVar

from . import _core
from ._types import (HelloInfo, LookupResult, RequestStatus, WorkerPrefix, ints, to_hello, to_locate, to_lookup,
                     to_stats, to_status)
from .errors import error_for

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0


def default_socket_path() -> str:
    """The socket kvblockd listens on by default ($XDG_RUNTIME_DIR/kvblockd.sock, else /tmp/kvblockd-<uid>.sock)."""
    return _core.default_socket_path()


def _identity(value: Any) -> Any:
    return value


class Pending(Generic[T]):
    """A request in flight. ``result()`` waits for its outcome (and raises its error)."""

    __slots__ = ("_conn", "_ticket", "_convert", "_timeout", "_request_id", "_taken", "_value", "_error")

    def __init__(self, conn: _core.Connection, ticket: int, convert: Callable[[Any], T], timeout: Optional[float]):
        self._conn = conn
        self._ticket = ticket
        self._convert = convert
        self._timeout = timeout
        self._request_id = conn.request_id(ticket)
        self._taken = False
        self._value: Any = None
        self._error: Optional[BaseException] = None

    @property
    def request_id(self) -> int:
        """The daemon-side request id (for status()/wait()); 0 if it never left the client."""
        return self._request_id

    def done(self) -> bool:
        """Whether the outcome has arrived. Never blocks."""
        return self._taken or self._conn.ready(self._ticket)

    def result(self, timeout: Optional[float] = -1.0) -> T:
        """The value, waiting up to ``timeout`` s (default: the client's timeout; None: no limit)."""
        if not self._taken:
            limit = self._timeout if timeout == -1.0 else timeout
            _, code, message, value = self._conn.take(self._ticket, -1.0 if limit is None else float(limit))
            self._taken = True
            if code != 0:
                self._error = error_for(code, message)
            else:
                self._value = self._convert(value)
        if self._error is not None:
            raise self._error
        return self._value


class Client:
    """A blocking session with kvblockd. Use as a context manager, or call close().

    ``timeout`` bounds every blocking call (kvblockd.Timeout when it passes;
    None waits without limit). Safe to share between threads: calls are
    independent requests on one connection.
    """

    def __init__(self, path: Optional[str] = None, *, timeout: Optional[float] = DEFAULT_TIMEOUT_S) -> None:
        self.path = path or default_socket_path()
        self.timeout = timeout
        self._conn = _core.Connection(self.path)
        self._regions: list[_core.KvRegion] = []

    # ---- plumbing ----
    def _pending(self, ticket: int, convert: Callable[[Any], T]) -> Pending[T]:
        return Pending(self._conn, ticket, convert, self.timeout)

    # ---- requests ----
    def hello(self, shape: Optional[_core.BlockShape] = None, *, tenant_salt: int = 0,
              client_name: str = "kvblockd-python") -> HelloInfo:
        """Says hello with the model's block shape (None: an operator session) and tenant salt."""
        shape = shape if shape is not None else _core.BlockShape(0, 0, 0)
        return self._pending(self._conn.hello(client_name, tenant_salt, shape, False), to_hello).result()

    def register_kv(self, region: _core.KvRegion) -> None:
        """Hands the daemon the engine's KV region (its memfds). The client keeps the region alive."""
        self._pending(self._conn.register_kv(region, False), _identity).result()
        self._regions.append(region)

    def lookup(self, hashes: Iterable[int], *, pin: bool = False) -> LookupResult:
        """Longest stored prefix of ``hashes`` (chained block hashes, in order). pin=True leases the matched blocks."""
        return self._pending(self._conn.lookup(ints(hashes), pin, False), to_lookup).result()

    def locate(self, hashes: Iterable[int]) -> list[WorkerPrefix]:
        """For a KV-aware router: each worker's longest prefix of ``hashes`` (this daemon first)."""
        return self._pending(self._conn.locate(ints(hashes), False), to_locate).result()

    def offload_nowait(self, blocks: Iterable[int], hashes: Iterable[int]) -> Pending[None]:
        return self._pending(self._conn.offload(ints(blocks), ints(hashes), False), _identity)

    def offload(self, blocks: Iterable[int], hashes: Iterable[int]) -> None:
        """Copies engine block blocks[i] to the daemon under hashes[i]; returns once they are registered."""
        self.offload_nowait(blocks, hashes).result()

    def onboard_nowait(self, blocks: Iterable[int], hashes: Iterable[int]) -> Pending[None]:
        return self._pending(self._conn.onboard(ints(blocks), ints(hashes), False), _identity)

    def onboard(self, blocks: Iterable[int], hashes: Iterable[int]) -> None:
        """Copies the block of hashes[i] into engine block blocks[i]; returns once every byte is there."""
        self.onboard_nowait(blocks, hashes).result()

    def release(self, hashes: Optional[Iterable[int]] = None) -> int:
        """Ends the leases of ``hashes`` (None: every lease of the session); returns how many ended."""
        return self._pending(self._conn.release(ints(hashes or []), False), _identity).result()

    def status(self, request_id: int) -> RequestStatus:
        return self._pending(self._conn.status(request_id, False), to_status).result()

    def wait(self, request_id: int, timeout_ms: int) -> RequestStatus:
        return self._pending(self._conn.wait(request_id, timeout_ms, False), to_status).result()

    def stats(self) -> dict[str, Any]:
        """The daemon's counters (docs/operations.md)."""
        return self._pending(self._conn.stats(False), to_stats).result()

    def config(self) -> str:
        """The daemon's effective configuration, as TOML text."""
        return self._pending(self._conn.config(False), _identity).result()

    def drain(self) -> None:
        self._pending(self._conn.drain(False), _identity).result()

    def bye(self) -> None:
        self._pending(self._conn.bye(False), _identity).result()

    # ---- lifetime ----
    @property
    def is_open(self) -> bool:
        return self._conn.is_open

    def close(self) -> None:
        """Closes the connection: requests still pending end with kvblockd.Cancelled. Idempotent."""
        self._conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(path: Optional[str] = None, *, timeout: Optional[float] = DEFAULT_TIMEOUT_S) -> Client:
    """A blocking :class:`Client` on ``path`` (default: the daemon's default socket)."""
    return Client(path, timeout=timeout)
