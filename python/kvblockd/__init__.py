"""kvblockd: Python client of the kvblockd KV-cache block manager daemon.

    import kvblockd
    with kvblockd.connect() as c:
        c.hello(kvblockd.BlockShape(num_layers=32, page_size=16, inner_dim=1024), tenant_salt=7)
        region = kvblockd.KvRegion.create(shape, "layer_separate_block_outer", num_blocks=1024)
        c.register_kv(region)
        c.offload([0, 1], [h0, h1])          # returns once the daemon registered them
        c.lookup([h0, h1]).prefix_blocks     # 2
        c.onboard([5, 6], [h0, h1])          # returns once blocks 5, 6 hold the bytes

asyncio: ``kvblockd.aio.AsyncClient``. vLLM: ``kvblockd.vllm.KvblockdConnector``.
Docs: docs/python.md in the kvblockd repository.
"""

from ._core import BlockShape, KvRegion, share_in_place
from ._client import Client, Pending, connect, default_socket_path
from ._types import HelloInfo, LookupResult, RequestState, RequestStatus, Tier, WorkerPrefix
from .errors import *  # noqa: F401,F403  (the exception classes)
from .errors import KvblockdError, error_for

__all__ = [
    "BlockShape", "KvRegion", "share_in_place", "Client", "Pending", "connect", "default_socket_path",
    "HelloInfo", "LookupResult", "RequestState", "RequestStatus", "Tier", "WorkerPrefix", "KvblockdError", "error_for",
]
from . import errors as _errors  # noqa: E402

__all__ += [c.__name__ for c in _errors.BY_CODE.values()]
