// In-process instantiation: the peer is a second Worker on the same io_context.
#include "transport_fixture.h"

namespace kvb::transport::test {

INSTANTIATE_TEST_SUITE_P(InProcess, TransportTest,
                         testing::Values(TransportParam{"tcp", PeerMode::in_process},
                                         TransportParam{"sm", PeerMode::in_process}),
                         param_name);

}  // namespace kvb::transport::test
