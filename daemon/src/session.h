// Session: one attached client connection and everything it holds.
//
// One reader coroutine per connection (recvmsg on the native handle, so that
// SCM_RIGHTS fds arrive with their bytes) and one writer path (a byte queue
// flushed by one async_write at a time). No task, timer or thread per pending
// request: async work completes through callbacks posted to the loop, and
// deadlines live in the daemon's one DeadlineQueue.
//
// The daemon's registry (DaemonCore::connections) holds the session from
// start() until its socket closes, which may be after the session ended.
// When the session ends (bye, disconnect, SIGKILLed client, protocol error,
// shutdown) its pending requests are cancelled (their copies finish, their
// results are dropped and their written blocks discarded), its pins end and
// its engine KV is unmapped once no copy uses it. Event-loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include "block_service.h"
#include "deadline_queue.h"
#include "frame_fds.h"
#include "kvb/common/protocol.h"
#include "kvb/common/unique_fd.h"

namespace kvb::daemon {

struct DaemonCore;

class Session : public std::enable_shared_from_this<Session> {
 public:
  using Socket = boost::asio::local::stream_protocol::socket;

  /// `uid`: the peer's (SO_PEERCRED at accept).
  Session(DaemonCore& core, SessionId id, Socket socket, std::uint32_t uid);
  ~Session();

  /// Registers the session and starts its reader coroutine.
  void start();
  /// The daemon is stopping: pending requests end with err(shutting down),
  /// the answers are flushed, then the connection closes. Idempotent.
  void shutdown();
  /// Closes the socket at once (shutdown grace period over). Idempotent.
  void force_close();

  [[nodiscard]] SessionId id() const noexcept { return id_; }
  /// Whether the session has ended (its connection may still flush answers).
  [[nodiscard]] bool ended() const noexcept { return ended_; }
  /// Async requests and waits not yet answered.
  [[nodiscard]] std::uint32_t inflight() const noexcept { return inflight_; }
  /// lookup(pin=1) leases held.
  [[nodiscard]] std::size_t pinned() const noexcept { return pins_.size(); }
  /// Answer bytes queued and not yet taken by the client.
  [[nodiscard]] std::size_t output_bytes() const noexcept { return out_.size() + wbuf_.size(); }
  /// Passed fds held for the frame being received (the daemon-wide fd budget).
  [[nodiscard]] std::size_t held_fds() const noexcept { return closed_ ? 0 : frame_fds_.held(); }
  /// Bytes of a partial frame and of unread answers (the daemon-wide byte budget).
  [[nodiscard]] std::size_t held_bytes() const noexcept { return closed_ ? 0 : parser_.buffered() + output_bytes(); }
  /// Closes this connection, with an error frame `out_of_capacity` saying
  /// `why`: a daemon-wide budget ran out and it holds the most.
  void evict(const std::string& why);

 private:
  using Clock = std::chrono::steady_clock;

  struct Pending {
    proto::MsgType op;
    std::uint64_t token = 0;
    Clock::time_point started;
    std::shared_ptr<OpControl> control;
    std::vector<RequestId> waiters;                 // wait requests on this one
    std::optional<DeadlineQueue::Handle> deadline;  // live until it fires or is cancelled
  };
  struct WaitState {
    RequestId target;
    std::uint64_t token = 0;
    Clock::time_point started;
    std::optional<DeadlineQueue::Handle> deadline;
  };
  struct Finished {
    bool ok = true;
    std::string message;
  };

  boost::asio::awaitable<void> read_loop();
  /// recvmsg into `buffer`; the fds that came with it go to frame_fds_; -1
  /// with errno on error.
  long receive(std::byte* buffer, std::size_t capacity);
  /// Decodes and handles every complete frame; false when the connection must stop reading.
  bool drain_frames();
  /// One complete frame and the fds that came with it (closed unless a
  /// register_kv claims them).
  void handle(const proto::Frame& frame, std::vector<UniqueFd> fds);

  void on_hello(RequestId id, const proto::HelloRequest& request);
  void finish_hello(RequestId id, const std::string& client_name, std::uint64_t tenant_salt);
  /// Handles the frames that waited for a hello's pool.
  void resume_frames();
  void on_register_kv(RequestId id, const proto::RegisterKvRequest& request, std::vector<UniqueFd> fds);
  void on_lookup(RequestId id, const proto::LookupRequest& request);
  void on_locate(RequestId id, const proto::LocateRequest& request);
  void on_offload(RequestId id, proto::OffloadRequest request);
  /// onboard (layers_per_group 0) and onboard_layers (progress per group).
  void on_onboard(RequestId id, std::vector<proto::OnboardItem> items, std::uint32_t layers_per_group,
                  proto::MsgType op);
  /// The block before `hash` in the last lookup's sequence; nullopt when
  /// that lookup did not name `hash` after its first block.
  [[nodiscard]] std::optional<std::uint64_t> parent_in_last_lookup(std::uint64_t hash) const;
  /// Per item: 1 when the last lookup counted its hit (then forgets them:
  /// one onboard per lookup).
  [[nodiscard]] std::vector<std::uint8_t> take_counted(std::span<const proto::OnboardItem> items);
  /// offload and the onboards: checks, then admission (accept_async) of a
  /// copy that `start` begins on BlockService.
  template <class Items, class Start>
  void on_copy(RequestId id, proto::MsgType op, Items items, Start start);
  void on_release(RequestId id, const proto::ReleaseRequest& request);
  void on_status(RequestId id, const proto::StatusRequest& request);
  void on_wait(RequestId id, const proto::WaitRequest& request);
  /// drain and config: operators only (DaemonCore::is_operator).
  void on_operator(RequestId id, proto::MsgType type);

  /// Admission and bookkeeping common to offload and onboard; `start` runs
  /// when a copy slot is free and must end with finish_copy().
  void accept_async(RequestId id, proto::MsgType op, std::function<void(std::shared_ptr<OpControl>)> start);
  /// An async request ended: history, waiters, notification, metrics.
  void complete(RequestId id, std::uint64_t token, Status result);
  void expire(RequestId id, std::uint64_t token);
  void expire_wait(RequestId wait_id, std::uint64_t token);
  void answer_wait(RequestId wait_id, proto::RequestState state, std::string message);
  [[nodiscard]] bool in_flight(RequestId id) const;

  void reply(RequestId id, const proto::Reply& reply, std::string_view op);
  void refuse(RequestId id, std::string_view op, const Error& error);
  void send_notification(RequestId id, const Status& result);
  template <class M>
  void send_message(RequestId id, const M& message);
  void send_bytes(std::span<const std::byte> frame);
  void write_next();
  /// Sends an error frame and closes this connection after it.
  void protocol_error(RequestId echo, const Error& error);
  /// Closes this connection now, after an error frame written only if the
  /// socket takes it at once (for clients that may not read: timeouts).
  void abort_connection(Errc code, const std::string& message);
  /// Arms (or clears) the connection's one deadline after a read: a frame
  /// begun must complete within frame_timeout_ms; a connection without hello
  /// must send a request every hello_timeout_ms. `progressed`: a frame completed.
  void rearm_deadline(bool progressed);
  void connection_deadline(std::uint64_t token);
  /// Ends the session (idempotent); see the header comment.
  void end();
  /// Closes the socket and leaves the daemon's registry (idempotent).
  void close_socket();
  /// Brings DaemonCore::held up to date with held_fds() / held_bytes().
  void account() noexcept;
  /// Before a read: passed fds the daemon can take with it (at most a frame's
  /// worth), after closing connections that hold more passed fds than this one
  /// while the daemon-wide room is short.
  [[nodiscard]] std::size_t make_fd_room();
  /// After this connection's bytes grew: while the daemon-wide buffered bytes
  /// are over max_buffered_bytes, closes the connection holding the most.
  void enforce_byte_budget();

  DaemonCore& core_;
  SessionId id_;
  std::uint32_t uid_;
  Socket socket_;
  proto::FrameParser parser_;
  FrameFds frame_fds_;                // fds of the frame being received
  std::uint64_t received_bytes_ = 0;  // stream offset: bytes read so far
  std::uint64_t frames_handled_ = 0;
  bool fds_truncated_ = false;
  std::size_t accounted_fds_ = 0;                  // this session's share of core_.held.fds
  std::size_t accounted_bytes_ = 0;                // and of core_.held.bytes
  std::optional<DeadlineQueue::Handle> deadline_;  // frame_timeout_ms / hello_timeout_ms, see rearm_deadline
  std::uint64_t deadline_token_ = 0;
  bool deadline_for_frame_ = false;

  std::vector<std::byte> out_;   // frames waiting for the writer
  std::vector<std::byte> wbuf_;  // the frames being written
  bool writing_ = false;
  bool stop_reading_ = false;
  bool close_after_flush_ = false;
  bool ended_ = false;
  bool closed_ = false;

  bool hello_done_ = false;
  bool hello_pending_ = false;  // its pool is being built (BlockService::attach_layout_async)
  std::uint64_t salt_ = 0;
  LayoutPool* pool_ = nullptr;
  std::shared_ptr<EngineKv> kv_;

  std::unordered_map<std::uint64_t, Pending> pending_;
  std::unordered_map<std::uint64_t, WaitState> waits_;
  std::unordered_map<std::uint64_t, Finished> finished_;
  std::deque<std::uint64_t> finished_order_;
  std::unordered_multimap<std::uint64_t, BlockLease> pins_;  // client hash -> lease
  // The last lookup (client hashes), for what the protocol does not say:
  // the parent of an offload's first item, and which onboarded blocks the
  // lookup already counted as hits.
  std::vector<std::uint64_t> last_lookup_;
  std::uint32_t last_prefix_ = 0;   // its prefix_blocks: where the offload of its misses starts
  std::uint32_t last_counted_ = 0;  // its local hits no onboard has leased since
  std::uint64_t next_token_ = 1;
  Clock::time_point handling_started_;  // receipt of the request being handled (latency of sync replies)
  std::uint32_t inflight_ = 0;
};

}  // namespace kvb::daemon
