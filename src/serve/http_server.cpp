#include "serve/http_server.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/error.hpp"
#include "core/log.hpp"

namespace tl {

namespace {

using Clock = std::chrono::steady_clock;

// Set by close_after_response() in a handler, read by serve_request() on the same thread.
thread_local bool close_requested = false;

template <class F>
ssize_t retry_on_eintr(F f) {
  ssize_t n;
  do {
    n = f();
  } while (n < 0 && errno == EINTR);
  return n;
}

bool wait_for(socket_t fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  return retry_on_eintr([&] { return ssize_t(::poll(&p, 1, timeout_ms)); }) > 0;
}

void close_socket(socket_t fd) {
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
}

void address_of(socket_t fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage addr{};
  socklen_t length = sizeof addr;
  auto* a = reinterpret_cast<sockaddr*>(&addr);
  if ((peer ? ::getpeername(fd, a, &length) : ::getsockname(fd, a, &length)) != 0) return;
  char host[NI_MAXHOST];
  if (::getnameinfo(a, length, host, sizeof host, nullptr, 0, NI_NUMERICHOST) == 0) ip = host;
  if (addr.ss_family == AF_INET) port = ntohs(reinterpret_cast<sockaddr_in*>(a)->sin_port);
  if (addr.ss_family == AF_INET6) port = ntohs(reinterpret_cast<sockaddr_in6*>(a)->sin6_port);
}

struct Connection {
  socket_t fd = -1;
  std::string in;  // received and not consumed yet: a request head, perhaps a body or the next request
  size_t consumed = 0;
  Clock::time_point deadline;  // for a complete request head
  size_t requests = 0;         // served on this connection
};

// A request's stream: what the poller received first, then the socket (cpp-httplib's SocketStream, but
// for the bytes read ahead).
class ConnectionStream final : public httplib::Stream {
 public:
  ConnectionStream(Connection& c, int read_timeout_ms, int write_timeout_ms)
      : c_(c), read_ms_(read_timeout_ms), write_ms_(write_timeout_ms) {}

  bool is_readable() const override {
    return c_.consumed < c_.in.size() || wait_for(c_.fd, POLLIN, read_ms_);
  }
  bool is_writable() const override { return wait_for(c_.fd, POLLOUT, write_ms_) && peer_is_there(); }

  ssize_t read(char* ptr, size_t size) override {
    if (c_.consumed == c_.in.size()) {
      c_.in.clear();
      c_.consumed = 0;
      if (!wait_for(c_.fd, POLLIN, read_ms_)) return -1;
      c_.in.resize(kChunk);
      const ssize_t n = retry_on_eintr([&] { return ::recv(c_.fd, c_.in.data(), kChunk, 0); });
      c_.in.resize(n > 0 ? size_t(n) : 0);
      if (n <= 0) return n;
    }
    const size_t k = std::min(size, c_.in.size() - c_.consumed);
    std::memcpy(ptr, c_.in.data() + c_.consumed, k);
    c_.consumed += k;
    return ssize_t(k);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    return retry_on_eintr([&] { return ::send(c_.fd, ptr, size, MSG_NOSIGNAL); });
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    address_of(c_.fd, true, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    address_of(c_.fd, false, ip, port);
  }
  socket_t socket() const override { return c_.fd; }

 private:
  static constexpr size_t kChunk = 16 << 10;

  // Nothing to read, or something: the peer is there; end of stream or an error: it left.
  bool peer_is_there() const {
    if (!wait_for(c_.fd, POLLIN, 0)) return true;
    char byte;
    const ssize_t n = retry_on_eintr([&] { return ::recv(c_.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT); });
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
  }

  Connection& c_;
  const int read_ms_, write_ms_;
};

// The poller's answer to a connection it gives up on, in the server's error format; sent without waiting.
void refuse(socket_t fd, int status, const char* reason, const char* code, const std::string& message) {
  const std::string body =
      nlohmann::json{{"error", {{"message", message}, {"type", "invalid_request_error"}, {"code", code}}}}
          .dump();
  const std::string response = fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
      status, reason, body.size(), body);
  [[maybe_unused]] const ssize_t n =
      ::send(fd, response.data(), response.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

enum class Head { Partial, Complete, TooLarge, Closed };

}  // namespace

class HttpServer::Connections final : public httplib::TaskQueue {
 public:
  explicit Connections(HttpServer& server)
      : server_(server), limits_(server.limits_), wake_{server.wake_[0], server.wake_[1]} {
    poller_ = std::thread([this] { poll_loop(); });
    for (int i = 0; i < std::max(1, limits_.workers); ++i) workers_.emplace_back([this] { work_loop(); });
  }
  ~Connections() override {
    shutdown();
    server_.connections_ = nullptr;
  }

  // cpp-httplib's accept loop enqueues process_and_close_socket(sock), which only hands sock to admit().
  void enqueue(std::function<void()> fn) override { fn(); }

  // The accept loop ended (stop()): waiting connections close, requests in progress finish, threads join.
  void shutdown() override {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      stopping_ = true;
    }
    wake();
    work_ready_.notify_all();
    poller_.join();
    for (auto& t : workers_) t.join();
  }

  void admit(socket_t fd) {
    auto c = std::make_unique<Connection>();
    c->fd = fd;
    to_poller(std::move(c));
  }

 private:
  void to_poller(std::unique_ptr<Connection> c) {
    c->in.erase(0, c->consumed);
    c->consumed = 0;
    c->deadline = Clock::now() + limits_.head_timeout;
    {
      std::lock_guard lock(mutex_);
      if (!stopping_) {
        incoming_.push_back(std::move(c));
        c = nullptr;
      }
    }
    if (c) return close_socket(c->fd);
    wake();
  }

  void wake() { [[maybe_unused]] const ssize_t n = ::write(wake_[1], "", 1); }

  Head head_of(const Connection& c) const {
    const size_t end = c.in.find("\r\n\r\n");
    if (end == std::string::npos)
      return c.in.size() > limits_.max_head_bytes ? Head::TooLarge : Head::Partial;
    return end + 4 > limits_.max_head_bytes ? Head::TooLarge : Head::Complete;
  }

  // Reads what has arrived, without blocking, until the head is complete.
  Head receive(Connection& c) const {
    char buf[4096];
    for (;;) {
      if (const Head h = head_of(c); h != Head::Partial) return h;
      const ssize_t n = retry_on_eintr([&] { return ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT); });
      if (n > 0) {
        c.in.append(buf, size_t(n));
      } else {
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? Head::Partial : Head::Closed;
      }
    }
  }

  void poll_loop() {
    std::vector<std::unique_ptr<Connection>> waiting;  // oldest first
    std::vector<pollfd> fds;
    const auto settle = [&](std::unique_ptr<Connection>& c, Head h) {
      switch (h) {
        case Head::Partial:
          return;
        case Head::Complete: {
          std::lock_guard lock(mutex_);
          ready_.push_back(std::move(c));
          work_ready_.notify_one();
          return;
        }
        case Head::TooLarge:
          refuse(
              c->fd, 431, "Request Header Fields Too Large", "request_header_too_large",
              fmt::format("the request line and headers are longer than {} bytes", limits_.max_head_bytes));
          break;
        case Head::Closed:
          break;
      }
      close_socket(c->fd);
      c = nullptr;
    };
    const auto time_out = [&](std::unique_ptr<Connection>& c) {
      if (!c->in.empty())  // part of a request: say why; an idle connection just closes
        refuse(c->fd, 408, "Request Timeout", "request_timeout",
               fmt::format("the request line and headers did not arrive within {} ms",
                           limits_.head_timeout.count()));
      log_debug("serve: a connection sent no complete request head in time: closed");
      close_socket(c->fd);
      c = nullptr;
    };
    const auto drop_settled = [&] { std::erase(waiting, nullptr); };

    std::vector<std::unique_ptr<Connection>> arrived;
    for (;;) {
      {
        std::lock_guard lock(mutex_);
        if (stopping_) break;
        arrived.swap(incoming_);
      }
      for (auto& c : arrived) {
        settle(c, head_of(*c));  // back from a worker with the next request read already
        if (c) waiting.push_back(std::move(c));
      }
      arrived.clear();
      while (waiting.size() > limits_.max_waiting_connections) {
        log_debug("serve: {} connections wait for a request head: the oldest is closed", waiting.size());
        close_socket(waiting.front()->fd);
        waiting.erase(waiting.begin());
      }

      fds.assign(1, pollfd{wake_[0], POLLIN, 0});
      auto next = Clock::time_point::max();
      for (const auto& c : waiting) {
        fds.push_back(pollfd{c->fd, POLLIN, 0});
        next = std::min(next, c->deadline);
      }
      int timeout_ms = -1;
      if (!waiting.empty()) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(next - Clock::now()).count();
        timeout_ms = int(std::clamp<int64_t>(left, 0, 60000));
      }
      retry_on_eintr([&] { return ssize_t(::poll(fds.data(), fds.size(), timeout_ms)); });
      if (fds[0].revents) {
        char buf[256];
        while (::read(wake_[0], buf, sizeof buf) > 0) {
        }
      }
      const auto now = Clock::now();
      for (size_t i = 0; i < waiting.size(); ++i) {
        auto& c = waiting[i];
        const Head h = fds[i + 1].revents ? receive(*c) : Head::Partial;
        if (h != Head::Partial)
          settle(c, h);
        else if (now >= c->deadline)
          time_out(c);
      }
      drop_settled();
    }
    for (auto& c : waiting) close_socket(c->fd);
    std::lock_guard lock(mutex_);
    for (auto& c : incoming_) close_socket(c->fd);
    incoming_.clear();
  }

  void work_loop() {
    const auto ms = [](time_t sec, time_t usec) { return int(sec * 1000 + usec / 1000); };
    for (;;) {
      std::unique_ptr<Connection> c;
      bool last = false;
      {
        std::unique_lock lock(mutex_);
        work_ready_.wait(lock, [&] { return stopping_ || !ready_.empty(); });
        if (ready_.empty()) return;  // stopping, and every complete request was served
        c = std::move(ready_.front());
        ready_.pop_front();
        last = stopping_;
      }
      last = last || ++c->requests >= server_.keep_alive_max_count_;
      ConnectionStream strm(*c, ms(server_.read_timeout_sec_, server_.read_timeout_usec_),
                            ms(server_.write_timeout_sec_, server_.write_timeout_usec_));
      if (server_.serve_request(strm, last))
        to_poller(std::move(c));
      else
        close_socket(c->fd);
    }
  }

  HttpServer& server_;
  const HttpLimits limits_;
  const int wake_[2];  // a byte in wake_[1] wakes the poller
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::vector<std::unique_ptr<Connection>> incoming_;  // for the poller: new, or back from a worker
  std::deque<std::unique_ptr<Connection>> ready_;      // a complete head: for a worker
  bool stopping_ = false;
  std::thread poller_;
  std::vector<std::thread> workers_;
};

HttpServer::HttpServer(HttpLimits limits) : limits_(limits) {
  TL_CHECK(::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) == 0, "serve: cannot create a pipe ({})",
           std::strerror(errno));
  new_task_queue = [this] {
    connections_ = new Connections(*this);
    return connections_;
  };
  // A response that closes its connection does not also announce keep-alive (cpp-httplib adds both when
  // only the response says Connection: close).
  set_post_routing_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.get_header_value("Connection") == "close") res.headers.erase("Keep-Alive");
  });
  // What the Keep-Alive response header announces: how long an idle connection is kept.
  set_keep_alive_timeout(
      std::max<time_t>(1, time_t(std::chrono::ceil<std::chrono::seconds>(limits_.head_timeout).count())));
}

HttpServer::~HttpServer() {
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void HttpServer::close_after_response(httplib::Response& res) {
  res.set_header("Connection", "close");
  close_requested = true;
}

bool HttpServer::process_and_close_socket(socket_t sock) {
  connections_->admit(sock);
  return true;
}

bool HttpServer::serve_request(httplib::Stream& strm, bool last) {
  bool connection_closed = false;
  close_requested = false;
  const bool ok = process_request(strm, last, connection_closed, nullptr);
  return ok && !last && !connection_closed && !close_requested;
}

}  // namespace tl
