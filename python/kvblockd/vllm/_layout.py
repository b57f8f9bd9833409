"""How vLLM's KV cache becomes a kvblockd KV region.

vLLM (0.32) allocates the KV cache itself: one int8 buffer with a per-layer
``[blocks, ...]`` view, where every (block, layer) page is one contiguous run
of ``page_bytes``. kvblockd sees a block as ``num_layers`` chunks of one page
each (``outer_dim = 1``: vLLM's page holds K and V), so any layout whose
pages are contiguous maps onto a wire layout kind:

- layer compact (each layer's pages back to back):  ``layer_separate_block_outer``,
  one region per layer;
- block outermost (a block's layers back to back):  ``fully_contiguous``, one region.

The daemon has to reach that memory. Two ways, chosen in ``KvCacheBinding``:

- **in place (zero copy)**: when each region's bytes start and end on a page
  boundary, its pages are moved onto a sealed memfd at the same addresses
  (``kvblockd.share_in_place``: copy, then ``mmap(MAP_FIXED|MAP_SHARED)``)
  and the memfds are registered: the daemon copies straight between vLLM's
  KV cache and its host tier, **1 copy per block** each way. torch puts
  buffers >= 2 MiB on page boundaries when ``THP_MEM_ALLOC_ENABLE=1`` is set
  before the engine starts (its default alignment is 64 bytes).
- **staging**: otherwise a memfd staging region of ``staging_blocks`` blocks
  is registered and the worker copies pages between it and vLLM's tensors:
  **2 copies per block** each way (vLLM <-> staging in the worker, staging
  <-> host tier in the daemon).
"""

from __future__ import annotations

import hashlib
import mmap
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .. import _core

_WIRE_DTYPES = {
    torch.uint8: "u8", torch.int8: "u8", torch.float16: "f16", torch.bfloat16: "bf16", torch.float32: "f32",
}
for _name, _wire in (("float8_e4m3fn", "fp8_e4m3"), ("float8_e5m2", "fp8_e5m2")):
    if hasattr(torch, _name):
        _WIRE_DTYPES[getattr(torch, _name)] = _wire


def tenant_salt(cache_salt: Optional[str]) -> int:
    """vLLM's per-request cache_salt as the daemon's 64-bit tenant salt (0: no salt)."""
    if not cache_salt:
        return 0
    return int.from_bytes(hashlib.sha256(cache_salt.encode()).digest()[:8], "little") or 1


def block_hash_u64(block_hash: Any) -> int:
    """vLLM's block hash (bytes, prefix chained) as the 64-bit hash the daemon keys blocks by."""
    if isinstance(block_hash, (bytes, bytearray)):
        return int.from_bytes(bytes(block_hash[:8]), "little")
    raw = getattr(block_hash, "hash_value", None) or getattr(block_hash, "block_hash", None)
    if raw is not None:
        return block_hash_u64(raw)
    return hash(block_hash) & 0xFFFFFFFFFFFFFFFF


def wire_dtype(dtype: torch.dtype) -> str:
    try:
        return _WIRE_DTYPES[dtype]
    except KeyError:
        raise ValueError(f"kvblockd: KV cache dtype {dtype} has no kvblockd wire dtype") from None


def shape_from_spec(kv_cache_config: Any) -> tuple[_core.BlockShape, int]:
    """The BlockShape of vLLM's (single, full attention) KV cache group, and its num_layers.

    Scheduler and worker both derive it from the KVCacheConfig so that their
    hellos name the same daemon pool.
    """
    groups = kv_cache_config.kv_cache_groups
    if len(groups) != 1:
        raise ValueError(f"kvblockd connector supports one KV cache group, got {len(groups)} "
                         "(run with disable_hybrid_kv_cache_manager=True)")
    spec = groups[0].kv_cache_spec
    num_layers = len(groups[0].layer_names)
    es = torch.tensor([], dtype=spec.dtype).element_size()
    page_bytes = spec.page_size_bytes
    if page_bytes % (spec.block_size * es):
        raise ValueError(f"kvblockd: page of {page_bytes} bytes is not block_size x whole elements")
    inner = page_bytes // (spec.block_size * es)
    return _core.BlockShape(num_layers=num_layers, page_size=spec.block_size, inner_dim=inner, outer_dim=1,
                            dtype=wire_dtype(spec.dtype)), num_layers


@dataclass
class _Layer:
    name: str
    pages: torch.Tensor  # uint8 [num_blocks, page_bytes] view of vLLM's layer cache
    base: int
    block_stride: int


def _alignment_for(block_bytes: int) -> int:
    align = 1
    while align < 4096 and block_bytes % (align * 2) == 0:
        align *= 2
    return align


class KvCacheBinding:
    """vLLM's KV tensors bound to a KvRegion the daemon maps (in place, or a staging region)."""

    def __init__(self, kv_caches: dict[str, torch.Tensor], shape: _core.BlockShape, *, staging_blocks: int,
                 allow_in_place: bool = True) -> None:
        seen: dict[int, str] = {}
        layers: list[_Layer] = []
        for name, t in kv_caches.items():
            if t.device.type != "cpu":
                raise ValueError(f"kvblockd: layer {name} is on {t.device}; device KV caches need the daemon's "
                                 "CUDA registration, not available in this build")
            if t.data_ptr() in seen:
                continue  # a layer sharing another's cache
            seen[t.data_ptr()] = name
            if not t[0].is_contiguous():
                raise ValueError(f"kvblockd: layer {name}'s block pages are not contiguous ({tuple(t.stride())})")
            pages = t.view(torch.uint8).flatten(1)
            layers.append(_Layer(name, pages, t.data_ptr(), t.stride(0) * t.element_size()))
        if len(layers) != shape.num_layers:
            raise ValueError(f"kvblockd: {len(layers)} KV caches, the KV cache config has {shape.num_layers} layers")
        self.layers = layers
        self.num_blocks = int(layers[0].pages.shape[0])
        self.page_bytes = int(layers[0].pages.shape[1])
        if self.page_bytes != shape.chunk_bytes:
            raise ValueError(f"kvblockd: page of {self.page_bytes} bytes, the spec says {shape.chunk_bytes}")
        self.shape = shape
        self.kind = self._wire_kind()
        self.region: _core.KvRegion
        self.in_place = False
        self.reason = ""
        if allow_in_place and self.kind is not None:
            self.in_place, self.reason = self._try_in_place()
        elif self.kind is None:
            self.reason = "the layers' pages are not laid out as one wire layout kind"
        else:
            self.reason = "in-place sharing disabled (kv_connector_extra_config in_place=False)"
        if not self.in_place:
            staging_shape = _core.BlockShape(num_layers=shape.num_layers, page_size=shape.page_size,
                                             inner_dim=shape.inner_dim, outer_dim=1, dtype=shape.dtype)
            self.staging_blocks = max(1, min(staging_blocks, self.num_blocks))
            self.region = _core.KvRegion.create(staging_shape, "layer_separate_block_outer", self.staging_blocks)
            self._staging = [torch.frombuffer(self.region.buffer(l), dtype=torch.uint8).view(self.staging_blocks,
                                                                                             self.page_bytes)
                             for l in range(shape.num_layers)]

    @property
    def copies_per_block(self) -> int:
        """Copies of each block's bytes per offload or onboard (daemon's included)."""
        return 1 if self.in_place else 2

    def _wire_kind(self) -> Optional[str]:
        L, P = len(self.layers), self.page_bytes
        if all(layer.block_stride == P for layer in self.layers):
            return "layer_separate_block_outer"
        stride = self.layers[0].block_stride
        if all(layer.block_stride == stride == L * P and layer.base == self.layers[0].base + i * P
               for i, layer in enumerate(self.layers)):
            return "fully_contiguous"
        return None

    def _ranges(self) -> list[tuple[int, int]]:
        if self.kind == "fully_contiguous":
            return [(self.layers[0].base, self.num_blocks * self.layers[0].block_stride)]
        return [(layer.base, self.num_blocks * self.page_bytes) for layer in self.layers]

    def _try_in_place(self) -> tuple[bool, str]:
        page = mmap.PAGESIZE
        ranges = self._ranges()
        bad = [(hex(a), n) for a, n in ranges if a % page or n % page]
        if bad:
            return False, (f"the KV cache is not page aligned (start {bad[0][0]}, {bad[0][1]} bytes; "
                           "start the engine with THP_MEM_ALLOC_ENABLE=1 for zero-copy)")
        fds = [_core.share_in_place(a, n) for a, n in ranges]
        shape = self.shape
        if self.kind == "fully_contiguous":
            shape = _core.BlockShape(num_layers=shape.num_layers, page_size=shape.page_size,
                                     inner_dim=shape.inner_dim, outer_dim=1, dtype=shape.dtype,
                                     alignment=_alignment_for(shape.block_bytes))
        self.region = _core.KvRegion.adopt_memfds(shape, self.kind, self.num_blocks, fds)
        return True, "vLLM's KV cache moved onto memfds in place"

    # ---- staging copies (only when not in place) ----
    def to_staging(self, blocks: list[int], slots: list[int]) -> None:
        """vLLM blocks -> staging slots (before an offload)."""
        for layer, stg in zip(self.layers, self._staging):
            for b, s in zip(blocks, slots):
                stg[s].copy_(layer.pages[b])

    def from_staging(self, slots: list[int], blocks: list[int]) -> None:
        """Staging slots -> vLLM blocks (after an onboard)."""
        for layer, stg in zip(self.layers, self._staging):
            for s, b in zip(slots, blocks):
                layer.pages[b].copy_(stg[s])
