// Tenant keys (daemon/src/tenant_keys.h): SipHash-2-4 against the paper's
// reference vectors, namespaces by uid, where the secret comes from.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "siphash.h"
#include "tenant_keys.h"

namespace kvb::daemon {
namespace {

// Aumasson and Bernstein, "SipHash: a fast short-input PRF", appendix A and
// the reference implementation's vectors: key 00..0f, message 00..(n-1).
TEST(SipHash, MatchesTheReferenceVectors) {
  SipKey key{};
  for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(i);
  std::array<std::byte, 64> message{};
  for (std::size_t i = 0; i < message.size(); ++i) message[i] = static_cast<std::byte>(i);
  auto of = [&](std::size_t n) { return siphash24(key, std::span<const std::byte>(message.data(), n)); };
  EXPECT_EQ(of(0), 0x726fdb47dd0e0e31ULL);
  EXPECT_EQ(of(8), 0x93f5f5799a932462ULL);
  EXPECT_EQ(of(15), 0xa129ca6149be45e5ULL);  // the paper's worked example
}

class TempDir {
 public:
  TempDir() {
    std::string t = (std::filesystem::temp_directory_path() / "kvb-tenant-XXXXXX").string();
    path_ = ::mkdtemp(t.data()) != nullptr ? t : std::string();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TenantKeys keys_with(std::string secret, std::vector<std::uint32_t> shared = {}) {
  auto key = TenantKeys::secret_from("test", std::move(secret));
  EXPECT_TRUE(key);
  return TenantKeys(key ? *key : SipKey{}, "test", std::move(shared));
}

TEST(TenantKeys, TheUidNotTheSaltPicksTheNamespace) {
  const TenantKeys keys = keys_with("0123456789abcdef0123");
  EXPECT_EQ(keys.session_key(1000, 7), keys.session_key(1000, 7));
  EXPECT_NE(keys.session_key(1000, 7), keys.session_key(1001, 7)) << "another uid naming the same salt";
  EXPECT_NE(keys.session_key(1000, 7), keys.session_key(1000, 8)) << "salts split a uid's namespace";
  EXPECT_NE(keys.session_key(0, 0), 0ULL);
}

TEST(TenantKeys, SharedUidsShareOneNamespace) {
  const TenantKeys keys = keys_with("0123456789abcdef0123", {1000, 1001});
  EXPECT_EQ(keys.session_key(1000, 7), keys.session_key(1001, 7));
  EXPECT_NE(keys.session_key(1000, 7), keys.session_key(1000, 8));
  EXPECT_NE(keys.session_key(1000, 7), keys.session_key(1002, 7)) << "a uid outside the list";
}

TEST(TenantKeys, TheSecretChangesEveryKey) {
  const TenantKeys a = keys_with("0123456789abcdef0123");
  const TenantKeys b = keys_with("0123456789abcdef0124");
  EXPECT_NE(a.session_key(1000, 7), b.session_key(1000, 7));
  // Trailing newlines of a text key file do not change it.
  EXPECT_EQ(a.session_key(1000, 7), keys_with("0123456789abcdef0123\n").session_key(1000, 7));
}

TEST(TenantKeys, AShortSecretIsRefusedNamingItsSource) {
  auto key = TenantKeys::secret_from("tenants.secret_file '/x'", "short\n");
  ASSERT_FALSE(key);
  EXPECT_EQ(key.error().code, Errc::invalid_argument);
  EXPECT_NE(key.error().message.find("'/x' holds 5 bytes"), std::string::npos) << key.error().message;
}

TEST(TenantKeys, ASecretFileIsReadAndAMissingOneIsAnError) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.path() + "/secret";
  std::ofstream(path) << "a-shared-secret-of-enough-bytes\n";
  DaemonConfig config;
  config.tenants_secret_file = path;
  auto keys = TenantKeys::load(config);
  ASSERT_TRUE(keys) << keys.error().message;
  EXPECT_EQ(keys->session_key(5, 6), keys_with("a-shared-secret-of-enough-bytes").session_key(5, 6));
  config.cluster_listen = "127.0.0.1:0";  // the file wins over the cluster's name
  auto again = TenantKeys::load(config);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->session_key(5, 6), keys->session_key(5, 6));

  config.tenants_secret_file = dir.path() + "/missing";
  auto missing = TenantKeys::load(config);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("tenants.secret_file"), std::string::npos) << missing.error().message;
}

TEST(TenantKeys, ClusterWorkersAgreeAndClustersDiffer) {
  DaemonConfig a;
  a.cluster_listen = "127.0.0.1:0";
  DaemonConfig b = a;
  DaemonConfig other = a;
  other.cluster_name = "another";
  auto ka = TenantKeys::load(a);
  auto kb = TenantKeys::load(b);
  auto ko = TenantKeys::load(other);
  ASSERT_TRUE(ka && kb && ko);
  EXPECT_EQ(ka->session_key(1000, 1), kb->session_key(1000, 1));
  EXPECT_NE(ka->session_key(1000, 1), ko->session_key(1000, 1));
}

TEST(TenantKeys, ADiskTierKeepsItsSecretAcrossStarts) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  DaemonConfig config;
  config.disk_path = dir.path();
  auto first = TenantKeys::load(config);
  ASSERT_TRUE(first) << first.error().message;
  const std::string file = dir.path() + "/" + TenantKeys::kDiskSecretName;
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600U);
  auto second = TenantKeys::load(config);
  ASSERT_TRUE(second);
  EXPECT_EQ(first->session_key(1000, 3), second->session_key(1000, 3)) << "a restart reads the same secret";

  // Without a disk tier (or a cluster, or a file) each start draws its own.
  DaemonConfig alone;
  auto r1 = TenantKeys::load(alone);
  auto r2 = TenantKeys::load(alone);
  ASSERT_TRUE(r1 && r2);
  EXPECT_NE(r1->session_key(1000, 3), r2->session_key(1000, 3));
}

}  // namespace
}  // namespace kvb::daemon
