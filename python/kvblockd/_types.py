"""Plain value types of the kvblockd API (what calls return)."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence


class Tier(enum.IntEnum):
    """Tier numbers of a lookup answer (docs/protocol.md)."""

    G1 = 1  # device memory
    G2 = 2  # host memory
    G3 = 3  # local disk
    G4 = 4  # another node


@dataclass(frozen=True)
class HelloInfo:
    """What hello answers."""

    session_id: int
    version: int
    max_frame_bytes: int
    max_inflight: int
    gpu_present: bool
    server_version: str


@dataclass(frozen=True)
class LookupResult:
    """prefix_blocks: the longest matched prefix over all tiers; tiers: blocks matched per tier."""

    prefix_blocks: int
    tiers: dict[Tier, int]


@dataclass(frozen=True)
class WorkerPrefix:
    """One worker's answer to locate: its name ("" for a daemon not in a cluster) and the
    longest prefix of the hashes it holds."""

    worker: str
    prefix_blocks: int


class RequestState(enum.IntEnum):
    PENDING = 0
    OK = 1
    ERR = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class RequestStatus:
    state: RequestState
    message: str


def to_hello(value: Any) -> HelloInfo:
    return HelloInfo(**value)


def to_lookup(value: Any) -> LookupResult:
    prefix, tiers = value
    return LookupResult(prefix, {Tier(t): n for t, n in tiers.items()})


def to_locate(value: Any) -> list[WorkerPrefix]:
    return [WorkerPrefix(worker, blocks) for worker, blocks in value]


def to_status(value: Any) -> RequestStatus:
    state, message = value
    return RequestStatus(RequestState(state), message)


def to_stats(value: Any) -> dict[str, Any]:
    return json.loads(value)


def ints(values: Iterable[int] | Sequence[int]) -> list[int]:
    """A list of Python ints from any sequence of ints (numpy arrays included)."""
    tolist = getattr(values, "tolist", None)
    if tolist is not None:
        return list(tolist())
    return [int(v) for v in values]
