"""kvblockd as a vLLM KV connector (vLLM's KVConnectorBase_V1, vLLM 0.32).

Select it with one config line::

    KVTransferConfig(kv_connector="KvblockdConnector", kv_connector_module_path="kvblockd.vllm",
                     kv_role="kv_both", kv_load_failure_policy="recompute",
                     kv_connector_extra_config={"socket": "/run/user/0/kvblockd.sock"})

and ``disable_hybrid_kv_cache_manager=True``. What it does:

- scheduler side: for each new request, looks vLLM's own block hashes up in
  the daemon (prefix chained; the request's ``cache_salt`` is the tenant)
  and tells vLLM how many prompt tokens it can load; plans the onboard of
  those blocks into the blocks vLLM allocated, and the offload of every
  block that becomes full.
- worker side: registers vLLM's KV cache with the daemon (in place, zero
  copy, or through a staging region: see ``_layout``), runs the onboards
  before the forward pass (or asynchronously: ``load_async``, the request
  waits in WAITING_FOR_REMOTE_KVS) and the offloads after it. A load that
  fails (a daemon that died, an evicted block) is reported through
  ``get_block_ids_with_load_errors``: vLLM recomputes those blocks (with
  ``kv_load_failure_policy="recompute"``). A save that fails is a future miss.

kv_connector_extra_config keys: ``socket`` (default: $KVBLOCKD_SOCKET, else
the daemon's default), ``load_async`` (False), ``in_place`` (True: share
vLLM's KV cache in place when page aligned), ``staging_blocks`` (256),
``timeout_s`` (10), ``retry_s`` (2).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (KVConnectorBase_V1, KVConnectorMetadata,
                                                                KVConnectorRole)

from .._client import Pending, default_socket_path
from ..errors import KvblockdError
from ._layout import KvCacheBinding, block_hash_u64, shape_from_spec, tenant_salt
from ._sessions import TenantSessions

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.request import Request

log = logging.getLogger("kvblockd.vllm")

__all__ = ["KvblockdConnector", "KvblockdMetadata", "STATS"]


@dataclass
class Transfer:
    """Blocks of one request to move: vLLM block ids and their 64-bit hashes, in prefix order."""

    req_id: str
    blocks: list[int]
    hashes: list[int]
    tenant: int
    is_async: bool = False


@dataclass
class KvblockdMetadata(KVConnectorMetadata):
    loads: list[Transfer] = field(default_factory=list)
    saves: list[Transfer] = field(default_factory=list)


@dataclass
class ConnectorStats:
    """What the connectors of this process did (for tests and the benchmark)."""

    lookups: int = 0
    hit_blocks: int = 0
    loaded_blocks: int = 0
    load_error_blocks: int = 0
    saved_blocks: int = 0
    save_errors: int = 0
    steps: int = 0
    scheduler_s: float = 0.0  # time inside the scheduler-side hooks
    worker_s: float = 0.0  # time inside the worker-side hooks
    copies_per_block: int = 0
    block_bytes: int = 0
    in_place: bool = False

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


STATS = ConnectorStats()


class _Timed:
    def __init__(self, attr: str) -> None:
        self.attr = attr

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        setattr(STATS, self.attr, getattr(STATS, self.attr) + time.perf_counter() - self.t0)


class KvblockdConnector(KVConnectorBase_V1):
    def __init__(self, vllm_config: "VllmConfig", role: KVConnectorRole, kv_cache_config: Any = None) -> None:
        super().__init__(vllm_config, role, kv_cache_config)
        extra = self._kv_transfer_config.kv_connector_extra_config or {}
        self._socket = str(extra.get("socket") or os.environ.get("KVBLOCKD_SOCKET") or default_socket_path())
        self._load_async = bool(extra.get("load_async", False))
        self._in_place = bool(extra.get("in_place", True))
        self._staging_blocks = int(extra.get("staging_blocks", 256))
        self._timeout_s = float(extra.get("timeout_s", 10.0))
        self._retry_s = float(extra.get("retry_s", 2.0))
        self._block_size = vllm_config.cache_config.block_size
        self._sessions: Optional[TenantSessions] = None
        # scheduler side
        self._requests: dict[str, "Request"] = {}
        self._matched: dict[str, tuple[int, int, list[int], int]] = {}
        self._block_ids: dict[str, list[int]] = {}
        self._saved_upto: dict[str, int] = {}
        self._loads: list[Transfer] = []
        # worker side
        self._binding: Optional[KvCacheBinding] = None
        self._async_loads: dict[str, tuple[Optional[Pending[None]], list[int]]] = {}
        self._load_errors: set[int] = set()
        if role == KVConnectorRole.SCHEDULER:
            shape, _ = shape_from_spec(kv_cache_config)
            self._sessions = TenantSessions(self._socket, shape, timeout_s=self._timeout_s, retry_s=self._retry_s,
                                            name="vllm-scheduler")

    # ==== scheduler side ====================================================
    def get_num_new_matched_tokens(self, request: "Request", num_computed_tokens: int) -> tuple[Optional[int], bool]:
        with _Timed("scheduler_s"):
            self._requests[request.request_id] = request
            bs = self._block_size
            usable = min((request.num_tokens - 1) // bs, len(request.block_hashes))  # keep >= 1 token to compute
            if usable * bs <= num_computed_tokens:
                return 0, False
            tenant = tenant_salt(request.cache_salt)
            hashes = [block_hash_u64(h) for h in request.block_hashes[:usable]]
            assert self._sessions is not None
            client = self._sessions.get(tenant)
            if client is None:
                return 0, False
            try:
                found = client.lookup(hashes).prefix_blocks
            except KvblockdError as e:
                self._sessions.failed(tenant, e)
                return 0, False
            STATS.lookups += 1
            if found * bs <= num_computed_tokens:
                return 0, False
            start = num_computed_tokens // bs
            self._matched[request.request_id] = (start, found, hashes, tenant)
            STATS.hit_blocks += found - start
            return found * bs - num_computed_tokens, self._load_async

    def update_state_after_alloc(self, request: "Request", blocks: "KVCacheBlocks", num_external_tokens: int) -> None:
        matched = self._matched.pop(request.request_id, None)
        if num_external_tokens == 0 or matched is None:
            return
        start, end, hashes, tenant = matched
        block_ids = blocks.get_block_ids()[0]
        self._loads.append(Transfer(request.request_id, list(block_ids[start:end]), hashes[start:end], tenant,
                                    self._load_async))
        self._saved_upto[request.request_id] = end  # the daemon holds these

    def build_connector_meta(self, scheduler_output: "SchedulerOutput") -> KVConnectorMetadata:
        with _Timed("scheduler_s"):
            STATS.steps += 1
            meta = KvblockdMetadata(loads=self._loads)
            self._loads = []
            for new in scheduler_output.scheduled_new_reqs:
                self._block_ids[new.req_id] = list(new.block_ids[0])
                self._plan_save(new.req_id, new.num_computed_tokens
                                + scheduler_output.num_scheduled_tokens.get(new.req_id, 0), meta)
            cached = scheduler_output.scheduled_cached_reqs
            for i, req_id in enumerate(cached.req_ids):
                new_ids = cached.new_block_ids[i]
                if req_id in cached.resumed_req_ids:
                    self._block_ids[req_id] = list(new_ids[0]) if new_ids else []
                elif new_ids:
                    self._block_ids.setdefault(req_id, []).extend(new_ids[0])
                self._plan_save(req_id, cached.num_computed_tokens[i]
                                + scheduler_output.num_scheduled_tokens.get(req_id, 0), meta)
            return meta

    def _plan_save(self, req_id: str, computed_after: int, meta: KvblockdMetadata) -> None:
        request = self._requests.get(req_id)
        block_ids = self._block_ids.get(req_id, [])
        if request is None:
            return
        full = min(computed_after // self._block_size, len(request.block_hashes), len(block_ids))
        start = self._saved_upto.get(req_id, 0)
        if full <= start:
            return
        hashes = [block_hash_u64(h) for h in request.block_hashes[start:full]]
        meta.saves.append(Transfer(req_id, block_ids[start:full], hashes, tenant_salt(request.cache_salt)))
        self._saved_upto[req_id] = full

    def request_finished(self, request: "Request", block_ids: list[int]) -> tuple[bool, Optional[dict[str, Any]]]:
        # Saves are complete when their step ends (wait_for_save): nothing holds the blocks.
        for table in (self._requests, self._matched, self._block_ids, self._saved_upto):
            table.pop(request.request_id, None)
        return False, None

    # ==== worker side =======================================================
    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        shape, _ = shape_from_spec(self._kv_cache_config)
        self._binding = KvCacheBinding(kv_caches, shape, staging_blocks=self._staging_blocks,
                                       allow_in_place=self._in_place)
        STATS.copies_per_block = self._binding.copies_per_block
        STATS.in_place = self._binding.in_place
        STATS.block_bytes = shape.block_bytes
        log.info("kvblockd: %d KV blocks of %d layers, %s: %s; %d copies per block per transfer",
                 self._binding.num_blocks, shape.num_layers,
                 "in place (zero copy)" if self._binding.in_place else
                 f"staging region of {self._binding.staging_blocks} blocks", self._binding.reason,
                 self._binding.copies_per_block)
        self._sessions = TenantSessions(self._socket, shape, region=self._binding.region, timeout_s=self._timeout_s,
                                        retry_s=self._retry_s, name="vllm-worker")

    def start_load_kv(self, forward_context: "ForwardContext", **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        if not isinstance(meta, KvblockdMetadata) or not meta.loads:
            return
        with _Timed("worker_s"):
            waiting: list[tuple[Transfer, Optional[Pending[None]]]] = []
            for load in meta.loads:
                if self._binding is not None and not self._binding.in_place:
                    self._load_staged(load)
                    if load.is_async:
                        self._async_loads[load.req_id] = (None, [])
                    continue
                pending = self._submit(load, onboard=True)
                if load.is_async:
                    self._async_loads[load.req_id] = (pending, load.blocks)
                else:
                    waiting.append((load, pending))
            for load, pending in waiting:
                self._finish_load(load.blocks, pending)

    def _submit(self, t: Transfer, *, onboard: bool) -> Optional[Pending[None]]:
        assert self._sessions is not None
        client = self._sessions.get(t.tenant)
        if client is None:
            return None
        try:
            if onboard:
                return client.onboard_nowait(t.blocks, t.hashes)
            return client.offload_nowait(t.blocks, t.hashes)
        except KvblockdError as e:
            self._sessions.failed(t.tenant, e)
            return None

    def _finish_load(self, blocks: list[int], pending: Optional[Pending[None]]) -> None:
        try:
            if pending is None:
                raise KvblockdError("no session with kvblockd")
            pending.result()
            STATS.loaded_blocks += len(blocks)
        except KvblockdError as e:
            log.warning("kvblockd: loading %d blocks failed (%s); vLLM recomputes them", len(blocks), e)
            self._load_errors.update(blocks)
            STATS.load_error_blocks += len(blocks)

    def _load_staged(self, load: Transfer) -> None:
        assert self._binding is not None and self._sessions is not None
        n = self._binding.staging_blocks
        for at in range(0, len(load.blocks), n):
            blocks, hashes = load.blocks[at:at + n], load.hashes[at:at + n]
            slots = list(range(len(blocks)))
            client = self._sessions.get(load.tenant)
            try:
                if client is None:
                    raise KvblockdError("no session with kvblockd")
                client.onboard(slots, hashes)
            except KvblockdError as e:
                self._sessions.failed(load.tenant, e)
                log.warning("kvblockd: loading %d blocks failed (%s); vLLM recomputes them",
                            len(load.blocks) - at, e)
                self._load_errors.update(load.blocks[at:])
                STATS.load_error_blocks += len(load.blocks) - at
                return
            self._binding.from_staging(slots, blocks)
            STATS.loaded_blocks += len(blocks)

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # loads end in start_load_kv (the daemon has no layer-wise onboard)

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any, **kwargs: Any) -> None:
        return  # whole blocks are saved in wait_for_save, once every layer wrote them

    def wait_for_save(self) -> None:
        meta = self._get_connector_metadata()
        if not isinstance(meta, KvblockdMetadata) or not meta.saves:
            return
        with _Timed("worker_s"):
            assert self._binding is not None and self._sessions is not None
            if not self._binding.in_place:
                for save in meta.saves:
                    self._save_staged(save)
                return
            # Every offload of the step in flight at once; all end before vLLM may reuse a block.
            pendings = [(save, self._submit(save, onboard=False)) for save in meta.saves]
            for save, pending in pendings:
                try:
                    if pending is not None:
                        pending.result()
                        STATS.saved_blocks += len(save.blocks)
                except KvblockdError as e:
                    STATS.save_errors += 1
                    self._sessions.failed(save.tenant, e)
                    log.debug("kvblockd: saving %d blocks failed: %s", len(save.blocks), e)

    def _save_staged(self, save: Transfer) -> None:
        assert self._binding is not None and self._sessions is not None
        n = self._binding.staging_blocks
        client = self._sessions.get(save.tenant)
        if client is None:
            return
        for at in range(0, len(save.blocks), n):
            blocks, hashes = save.blocks[at:at + n], save.hashes[at:at + n]
            slots = list(range(len(blocks)))
            self._binding.to_staging(blocks, slots)
            try:
                client.offload(slots, hashes)
                STATS.saved_blocks += len(blocks)
            except KvblockdError as e:
                STATS.save_errors += 1
                self._sessions.failed(save.tenant, e)
                return

    def get_finished(self, finished_req_ids: set[str]) -> tuple[Optional[set[str]], Optional[set[str]]]:
        if not self._async_loads:
            return None, None
        with _Timed("worker_s"):
            done: set[str] = set()
            for req_id, (pending, blocks) in list(self._async_loads.items()):
                if pending is None and blocks:
                    self._finish_load(blocks, None)
                elif pending is not None:
                    if not pending.done():
                        continue
                    self._finish_load(blocks, pending)
                done.add(req_id)
                del self._async_loads[req_id]
            return None, (done or None)

    def get_block_ids_with_load_errors(self) -> set[int]:
        errors, self._load_errors = self._load_errors, set()
        return errors

    def shutdown(self) -> None:
        if self._sessions is not None:
            self._sessions.close()
