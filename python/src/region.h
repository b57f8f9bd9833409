// KV regions for Python: the client's memfd KvRegion, views of its memory
// without copies (DLPack / buffer protocol), and moving memory an engine
// already uses onto a memfd in place (so the daemon can map it).
#pragma once

#include <cstdint>
#include <string>

#include <nanobind/nanobind.h>

#include "kvb/client/kv_region.h"

namespace kvbpy {

/// Wire dtype number of a name ("bf16", ...); throws Failure naming the valid ones.
std::uint8_t dtype_from_name(const std::string& name);
/// Name of a wire dtype number.
std::string dtype_name(std::uint8_t dtype);
/// WireLayoutKind of a name ("layer_separate_outer_block", ...); throws Failure.
kvb::client::WireLayoutKind kind_from_name(const std::string& name);
std::string kind_name(kvb::client::WireLayoutKind kind);

/// Puts the pages [addr, addr + nbytes) of this process on a new sealed memfd
/// without moving them: copies their bytes into the memfd, then maps it over
/// the same addresses (MAP_FIXED | MAP_SHARED). Returns the memfd, which the
/// caller owns. Both ends must be page aligned. Nothing may write the range
/// while this runs (such a write could be lost). Throws Failure.
int share_in_place(std::uintptr_t addr, std::uint64_t nbytes);

void bind_region(nanobind::module_& m);

}  // namespace kvbpy
