// The bootstrap answer a worker reads from a peer (docs/cluster.md,
// "Connections"): anything but a well-formed identity is a protocol error,
// never an exception (the answer comes from whatever listens there), and
// which transports open endpoints by IP:PORT.
#include <gtest/gtest.h>

#include "cluster/bootstrap.h"
#include "cluster/same_host_map.h"

namespace kvb::daemon::cluster {
namespace {

const HostPort kAt{"127.0.0.1", 4000};

TEST(BootstrapIdentity, AWellFormedAnswerGivesTheWorkerItsAddressAndItsUcxPort) {
  auto id = parse_identity(R"({"cluster":"c","worker":"A","bootstrap":"127.0.0.1:4000","ucx_address":"0a0b",)"
                           R"("ucx_port":4100})",
                           kAt);
  ASSERT_TRUE(id) << id.error().to_string();
  EXPECT_EQ(id->cluster, "c");
  EXPECT_EQ(id->worker, "A");
  EXPECT_EQ(id->ucx_address.size(), 2U);
  EXPECT_EQ(id->ucx_port, 4100);
  // A worker that announces no UCX listener is connected by address.
  auto older = parse_identity(R"({"cluster":"c","worker":"A","ucx_address":"0a0b"})", kAt);
  ASSERT_TRUE(older);
  EXPECT_EQ(older->ucx_port, 0);
}

TEST(BootstrapIdentity, FieldsOfTheWrongTypeOrRangeAreProtocolErrors) {
  for (const char* line : {
           R"({"cluster":5,"worker":"A","ucx_address":"0a0b"})",
           R"({"cluster":"c","worker":["A"],"ucx_address":"0a0b"})",
           R"({"cluster":"c","worker":"A","ucx_address":12})",
           R"({"cluster":"c","worker":"A","ucx_address":"0a0b","ucx_port":"4100"})",
           R"({"cluster":"c","worker":"A","ucx_address":"0a0b","ucx_port":70000})",
           R"({"cluster":"c","worker":"A","ucx_address":"0a0b","ucx_port":-1})",
           R"({"cluster":"c","worker":"A","ucx_address":"0a0b","ucx_port":1.5})",
           R"({"cluster":"c","worker":"","ucx_address":"0a0b"})",
           R"({"cluster":"c","worker":"A","ucx_address":"zz"})",
           R"(["not", "an", "object"])",
           "not json",
       }) {
    auto id = parse_identity(line, kAt);
    ASSERT_FALSE(id) << line;
    EXPECT_EQ(id.error().code, Errc::protocol_error) << line << ": " << id.error().to_string();
  }
}

TEST(BootstrapIdentity, PeersOverTheNetworkOpenByIpPortAndPeersThatSharedMemoryReachesByAddress) {
  EXPECT_TRUE(tls_listens_by_ip_port(""));  // UCX's choice
  EXPECT_TRUE(tls_listens_by_ip_port("tcp"));
  EXPECT_TRUE(tls_listens_by_ip_port("sm,tcp"));
  EXPECT_FALSE(tls_listens_by_ip_port("sm"));
  EXPECT_FALSE(tls_listens_by_ip_port("cma"));
  EXPECT_FALSE(tls_listens_by_ip_port("self"));
  // tls, peer listens, same host
  EXPECT_TRUE(opens_by_ip_port("tcp", true, true));  // loopback tcp: no shared memory to lose
  EXPECT_TRUE(opens_by_ip_port("tcp", true, false));
  EXPECT_TRUE(opens_by_ip_port("sm,tcp", true, false));  // another host
  EXPECT_TRUE(opens_by_ip_port("", true, false));
  EXPECT_FALSE(opens_by_ip_port("sm,tcp", true, true));  // same host: shared-memory lanes by address
  EXPECT_FALSE(opens_by_ip_port("", true, true));
  EXPECT_FALSE(opens_by_ip_port("tcp", false, false));  // an older worker without a listener
  EXPECT_FALSE(opens_by_ip_port("sm", true, false));
}

}  // namespace
}  // namespace kvb::daemon::cluster
