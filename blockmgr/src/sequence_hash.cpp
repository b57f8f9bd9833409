#include "kvb/blockmgr/sequence_hash.h"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

namespace kvb {

SequenceHash chain_hash(SequenceHash parent, std::span<const std::uint32_t> tokens, HashSalt salt) noexcept {
  // One streaming pass: parent || salt || tokens, seeded with the salt. The
  // salt is both the seed and part of the input, so it enters every link.
  XXH3_state_t state;
  XXH3_64bits_reset_withSeed(&state, salt);
  const std::uint64_t head[2] = {parent.value(), salt};
  XXH3_64bits_update(&state, head, sizeof(head));
  XXH3_64bits_update(&state, tokens.data(), tokens.size_bytes());
  return SequenceHash{XXH3_64bits_digest(&state)};
}

Result<std::vector<SequenceHash>> hash_token_blocks(std::span<const std::uint32_t> tokens, std::uint32_t page_size,
                                                    HashSalt salt) {
  if (page_size == 0) return fail(Errc::invalid_argument, "sequence hash: page_size must be > 0 (got {})", page_size);
  std::vector<SequenceHash> hashes;
  hashes.reserve(tokens.size() / page_size);
  SequenceHash parent = kSequenceRoot;
  for (std::size_t start = 0; start + page_size <= tokens.size(); start += page_size) {
    parent = chain_hash(parent, tokens.subspan(start, page_size), salt);
    hashes.push_back(parent);
  }
  return hashes;
}

}  // namespace kvb
