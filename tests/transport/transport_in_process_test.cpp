// In-process instantiation: the peer is a second Worker on the same io_context.
#include "transport_fixture.h"

namespace kvb::transport::test {

INSTANTIATE_TEST_SUITE_P(InProcess, TransportTest,
                         testing::Values(TransportParam{"tcp", PeerMode::in_process},
                                         TransportParam{"sm", PeerMode::in_process}),
                         param_name);

// The same bodies with both workers spinning (WorkerOptions::spin): UCX
// callbacks then complete handlers from the spin slices, not after a wakeup.
INSTANTIATE_TEST_SUITE_P(InProcessSpinning, TransportTest,
                         testing::Values(TransportParam{"tcp", PeerMode::in_process, std::chrono::microseconds(50)},
                                         TransportParam{"sm", PeerMode::in_process, std::chrono::microseconds(50)}),
                         param_name);

}  // namespace kvb::transport::test
