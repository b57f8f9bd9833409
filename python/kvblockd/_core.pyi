"""
kvblockd client core (C++ client library binding). Use the kvblockd package, not this module.
"""

from collections.abc import Sequence
from typing import Annotated, Any


def errc_names() -> list[str]:
    """Errc names by code, from the C++ library (docs/protocol.md)."""

def default_socket_path() -> str:
    """The socket kvblockd listens on by default (docs/configuration.md)."""

class BlockShape:
    """
    The model's KV block shape: num_layers x outer_dim (2 = K,V; 1 = MLA) x page_size tokens x inner_dim (num_kv_heads x head_dim) elements of dtype.
    """

    def __init__(self, num_layers: int, page_size: int, inner_dim: int, outer_dim: int = 2, dtype: str = 'bf16', alignment: int = 256) -> None: ...

    @property
    def num_layers(self) -> int: ...

    @property
    def outer_dim(self) -> int: ...

    @property
    def page_size(self) -> int: ...

    @property
    def inner_dim(self) -> int: ...

    @property
    def alignment(self) -> int: ...

    @property
    def dtype(self) -> str: ...

    @property
    def dtype_size(self) -> int: ...

    @property
    def chunk_bytes(self) -> int:
        """Bytes of one (block, layer, outer) chunk."""

    @property
    def block_bytes(self) -> int:
        """Bytes of one block's payload."""

    def __eq__(self, arg: BlockShape, /) -> bool: ...

    def __repr__(self) -> str: ...

class KvRegion:
    """
    num_blocks KV blocks of one shape, arranged one way, on memfd regions the daemon maps.
    """

    @staticmethod
    def create(shape: BlockShape, kind: str, num_blocks: int) -> KvRegion:
        """
        New zeroed memfd regions: one for fully_contiguous, num_layers for the layer separate kinds.
        """

    @staticmethod
    def adopt_memfds(shape: BlockShape, kind: str, num_blocks: int, fds: Sequence[int]) -> KvRegion:
        """
        Region over memfds made elsewhere (one per layout region); takes ownership of the fds, also on error.
        """

    @staticmethod
    def region_bytes_for(shape: BlockShape, kind: str, num_blocks: int) -> int: ...

    @property
    def shape(self) -> BlockShape: ...

    @property
    def kind(self) -> str: ...

    @property
    def num_blocks(self) -> int: ...

    @property
    def num_regions(self) -> int: ...

    @property
    def region_bytes(self) -> int: ...

    def place(self, block: int, layer: int, outer: int) -> tuple[int, int]:
        """(region, byte offset) of chunk (block, layer, outer)."""

    def buffer(self, region: int = 0) -> Annotated[memoryview, dict(dtype='uint8', shape=(None,), order='C')]:
        """The bytes of region r, without a copy (buffer protocol and DLPack)."""

    def tensor(self, region: int = 0) -> Any:
        """
        Region r typed and shaped by the layout, without a copy (DLPack: torch.from_dlpack; numpy for f16/f32/u8).
        """

    def chunk(self, block: int, layer: int, outer: int) -> Annotated[memoryview, dict(dtype='uint8', shape=(None,), order='C')]:
        """The bytes of one chunk, without a copy."""

def share_in_place(addr: int, nbytes: int) -> int:
    """
    Move the pages [addr, addr+nbytes) onto a new sealed memfd in place (same addresses, same bytes); returns the memfd (owned by the caller). Page aligned at both ends; nothing may write the range meanwhile.
    """

class Connection:
    """One session with kvblockd (io thread in C++; see kvblockd.Client)."""

    def __init__(self, path: str) -> None: ...

    def hello(self, name: str, salt: int, shape: BlockShape, async_: bool) -> int: ...

    def register_kv(self, region: KvRegion, async_: bool) -> int: ...

    def lookup(self, hashes: Sequence[int], pin: bool, async_: bool) -> int: ...

    def locate(self, hashes: Sequence[int], async_: bool) -> int: ...

    def offload(self, blocks: Sequence[int], hashes: Sequence[int], async_: bool) -> int: ...

    def onboard(self, blocks: Sequence[int], hashes: Sequence[int], async_: bool) -> int: ...

    def release(self, hashes: Sequence[int], async_: bool) -> int: ...

    def status(self, request_id: int, async_: bool) -> int: ...

    def wait(self, request_id: int, timeout_ms: int, async_: bool) -> int: ...

    def stats(self, async_: bool) -> int: ...

    def config(self, async_: bool) -> int: ...

    def drain(self, async_: bool) -> int: ...

    def bye(self, async_: bool) -> int: ...

    def request_id(self, ticket: int) -> int: ...

    def ready(self, ticket: int) -> bool: ...

    def take(self, ticket: int, timeout_s: float) -> tuple:
        """
        Wait for a blocking ticket's outcome: (ticket, code, message, value). Signals are checked every 100 ms.
        """

    def drain_async(self) -> list: ...

    @property
    def event_fd(self) -> int: ...

    @property
    def is_open(self) -> bool: ...

    @property
    def pending(self) -> int: ...

    def close(self) -> None: ...
