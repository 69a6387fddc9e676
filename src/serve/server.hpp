// An OpenAI-compatible HTTP server for one model (cpp-httplib underneath):
//
//   GET  /health                 {"status":"ok", "running":n, "waiting":n}
//   GET  /v1/models              the model
//   POST /v1/completions         prompt (text or token ids) -> text; "stream": true for Server-Sent Events
//   POST /v1/chat/completions    messages -> assistant message, rendered with the model's chat format
//
// Concurrency: requests are served by a pool of threads (a connection waits for its request line and
// headers outside the pool: serve/http_server.hpp), but generation runs one request at a time (the model
// uses every core), each request on its own DecodeSession. Requests wait in a bounded FIFO queue; when it
// is full the server answers 503. A streaming client that goes away stops its generation at the next
// token. Errors are OpenAI-style JSON: {"error":{"message","type","code"}}.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "infer/loader.hpp"
#include "infer/sampling.hpp"

namespace tl {

struct ServerOptions {
  std::string host = "127.0.0.1";           // loopback unless asked: there is no authentication
  int port = 8080;                          // 0: any free port (start() returns it)
  size_t max_body_bytes = size_t(1) << 20;  // larger request bodies get 413
  int max_queue = 8;                        // requests that may wait while one generates; more get 503
  int http_threads = 8;      // request threads (at least max_queue + 4, so a full queue still answers)
  int64_t context = 0;       // tokens per request, prompt + completion; 0: the model's maximum
  std::string chat_format;   // bitnet | llama3 | bitnet-cpp | chatml; empty: detected from the model
  std::string model_name;    // the id in /v1/models and responses; empty: the model's name
  int read_timeout_s = 30;   // a client that sends nothing of its body for this long is dropped
  int write_timeout_s = 30;  // a client that reads nothing for this long is dropped (and generation ends)
  // A request's line and headers must arrive within this many seconds of the connection (or of the
  // previous response on a kept-alive one), in all, else the connection closes (408 if part came). Until
  // then a connection holds no request thread: clients that connect and wait cannot keep others out.
  int header_timeout_s = 10;
  // Sampling for fields a request leaves out (llama.cpp's server defaults, seed 0, 256 tokens).
  SamplingParams defaults = [] {
    SamplingParams p;
    p.max_tokens = 256;
    return p;
  }();
};

class Server {
 public:
  // The model must outlive the server. Errors: a chat format that is unknown or cannot be detected from
  // the model's template, invalid options.
  Server(const LoadedModel& model, ServerOptions options);
  ~Server();  // stops
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts serving on a background thread; returns the port. Errors: the address cannot be bound.
  int start();
  // Stops accepting, ends running generations at their next token, fails queued requests, joins threads.
  void stop();

  int port() const;
  int running() const;  // generations in progress (0 or 1)
  int waiting() const;  // requests admitted and waiting for their turn

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tl
