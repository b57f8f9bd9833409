"""One exception hierarchy for everything kvblockd answers.

Every failure the daemon or the client library reports carries an ``Errc``
(docs/protocol.md): it is raised as the subclass of :class:`KvblockdError`
for that code, with the code's name in ``errc``, its number in ``code`` and
the daemon's message in ``message``. The names come from the C++ library
(``kvblockd._core.errc_names()``); a test checks this table against them.
"""

from __future__ import annotations


class KvblockdError(Exception):
    """A kvblockd failure: ``errc`` (name), ``code`` (number), ``message``."""

    errc: str = "internal"
    code: int = 13

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None and code != type(self).code:
            self.code = code  # an Errc this version does not know by name

    def __str__(self) -> str:
        return f"{self.errc}: {self.message}"


class InvalidArgument(KvblockdError, ValueError):
    errc, code = "invalid_argument", 1


class NotFound(KvblockdError, LookupError):
    errc, code = "not_found", 2


class AlreadyExists(KvblockdError):
    errc, code = "already_exists", 3


class OutOfCapacity(KvblockdError):
    errc, code = "out_of_capacity", 4


class Busy(KvblockdError):
    errc, code = "busy", 5


class Timeout(KvblockdError, TimeoutError):
    errc, code = "timeout", 6


class IoError(KvblockdError, OSError):
    errc, code = "io_error", 7


class ProtocolError(KvblockdError):
    errc, code = "protocol_error", 8


class Unavailable(KvblockdError):
    errc, code = "unavailable", 9


class Cancelled(KvblockdError):
    errc, code = "cancelled", 10


class ShuttingDown(KvblockdError):
    errc, code = "shutting_down", 11


class PermissionDenied(KvblockdError, PermissionError):
    errc, code = "permission_denied", 12


class Internal(KvblockdError):
    errc, code = "internal", 13


class PeerLost(KvblockdError, ConnectionError):
    errc, code = "peer_lost", 14


class Unsupported(KvblockdError):
    errc, code = "unsupported", 15


class WrongState(KvblockdError):
    errc, code = "wrong_state", 16


BY_CODE: dict[int, type[KvblockdError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument, NotFound, AlreadyExists, OutOfCapacity, Busy, Timeout, IoError, ProtocolError,
        Unavailable, Cancelled, ShuttingDown, PermissionDenied, Internal, PeerLost, Unsupported, WrongState,
    )
}


def error_for(code: int, message: str) -> KvblockdError:
    """The exception for an Errc number (an unknown number: KvblockdError with that code)."""
    cls = BY_CODE.get(code)
    if cls is None:
        err = KvblockdError(message, code)
        err.errc = f"errc_{code}"
        return err
    return cls(message)


__all__ = ["KvblockdError", "error_for", "BY_CODE"] + [c.__name__ for c in BY_CODE.values()]
