// Two-process instantiation: the peer is the transport_test_peer process.
#include "transport_fixture.h"

namespace kvb::transport::test {

INSTANTIATE_TEST_SUITE_P(TwoProcess, TransportTest,
                         testing::Values(TransportParam{"tcp", PeerMode::two_process},
                                         TransportParam{"sm", PeerMode::two_process}),
                         param_name);

}  // namespace kvb::transport::test
