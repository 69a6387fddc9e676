// cpp-httplib's Server, with connections that wait for their request head outside the worker threads.
//
// cpp-httplib 0.11 gives each accepted connection a pool thread at once, and that thread then waits for the
// request: 5 s for a first byte, then up to the read timeout for every further read. A few clients that
// connect and send nothing, or half a request head, so hold every thread, and /health waits behind them.
// Here one thread polls all connections that have no complete request head yet, each with a deadline for
// the whole head (not per read: trickling a byte at a time does not extend it); a connection goes to a
// worker only once its head is complete, and comes back to the poller between keep-alive requests. The
// workers run requests only: reading their bodies (with the read timeout), handlers, writing responses.
#pragma once
#include <httplib.h>

#include <chrono>
#include <cstddef>

namespace tl {

struct HttpLimits {
  int workers = 8;                                // threads that run requests
  std::chrono::milliseconds head_timeout{10000};  // for a request head (request line and headers), from the
                                                  // connection or the previous response; else dropped (408)
  size_t max_head_bytes = size_t(32) << 10;       // a longer request head gets 431
  size_t max_waiting_connections = 1024;          // without a complete head; past this the oldest is dropped
};

class HttpServer : public httplib::Server {
 public:
  explicit HttpServer(HttpLimits limits);  // Errors: no pipe could be created
  ~HttpServer() override;
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // For a handler that leaves part of the request unread (a body over the limit): the response says
  // "Connection: close" and the connection closes after it (cpp-httplib only looks at the request's).
  // The server's post-routing handler is taken for this.
  static void close_after_response(httplib::Response& res);

 private:
  class Connections;  // the poller and the workers, while listen_after_bind() runs

  bool process_and_close_socket(socket_t sock) override;  // on the accepting thread: hands sock over
  // On a worker: one request on strm; true when the connection stays open for another.
  bool serve_request(httplib::Stream& strm, bool last);

  const HttpLimits limits_;
  int wake_[2] = {-1, -1};              // a pipe that wakes the poller
  Connections* connections_ = nullptr;  // set while listening
};

}  // namespace tl
