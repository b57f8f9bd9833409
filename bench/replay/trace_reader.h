// Mooncake-format JSONL traces (kvcache-ai/Mooncake FAST'25 release): one
// JSON object a line with timestamp (ms), input_length, output_length
// (tokens) and hash_ids (one id per block, each id already chaining its
// prefix). Parsed with nlohmann-json's SAX interface straight into a
// TraceRequest (no DOM): the 12k-line shared trace reads in tens of ms.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kvb/common/error.h"

namespace kvb::bench {

struct TraceRequest {
  double timestamp_ms = 0;
  std::uint64_t input_length = 0;
  std::uint64_t output_length = 0;
  std::vector<std::uint64_t> hash_ids;
};

/// Parses one line. Every field above is required; other keys are skipped
/// whatever their JSON value. Errors (invalid_argument) name the line, the
/// column and what was expected.
[[nodiscard]] Result<TraceRequest> parse_trace_line(std::string_view line, std::size_t line_number);

/// Reads a whole trace (blank lines are skipped). max_requests 0 = all.
/// Errors: the file cannot be read (io_error) or a line is malformed.
[[nodiscard]] Result<std::vector<TraceRequest>> read_trace(const std::string& path, std::size_t max_requests = 0);

}  // namespace kvb::bench
