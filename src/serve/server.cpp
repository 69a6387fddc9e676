#include "serve/server.hpp"

#include <httplib.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <mutex>
#include <thread>

#include "core/error.hpp"
#include "core/log.hpp"
#include "infer/chat_template.hpp"
#include "infer/text_generation.hpp"
#include "serve/http_server.hpp"

namespace tl {

namespace {

using json = nlohmann::json;

// A request we answer with an error: the HTTP status and OpenAI's "code".
struct HttpError : std::runtime_error {
  HttpError(int status, std::string code, const std::string& message)
      : std::runtime_error(message), status(status), code(std::move(code)) {}
  int status;
  std::string code;
};

std::string error_type(int status) {
  switch (status) {
    case 404:
      return "not_found_error";
    case 503:
      return "server_busy_error";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

json error_json(int status, const std::string& code, const std::string& message) {
  return {{"error", {{"message", message}, {"type", error_type(status)}, {"code", code}}}};
}

// Generated text is valid UTF-8 already; replace rather than throw should anything slip through.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void send_error(httplib::Response& res, int status, const std::string& code, const std::string& message) {
  res.status = status;
  res.set_content(dump(error_json(status, code, message)), "application/json");
}

// ---- request fields --------------------------------------------------------------------------------

const json* field(const json& body, const char* key) {
  const auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

[[noreturn]] void bad_field(const std::string& message) {
  throw HttpError(400, "invalid_field", message);
}

double number_of(const json& v, const char* key) {
  if (!v.is_number()) bad_field(fmt::format("'{}' must be a number, found {}", key, v.type_name()));
  return v.get<double>();
}

// An integer in [lo, hi]. JSON may write it as a float (2.0, 1e3), or beyond every integer type (1e30,
// 2^64 - 1, which would wrap to -1 as an int64): the message names the field, the value as sent and the
// range.
int integer_in(const json& v, const char* key, int lo, int hi) {
  const auto refuse = [&] {
    bad_field(fmt::format("'{}' must be an integer in [{}, {}], found {}", key, lo, hi, v.dump()));
  };
  int64_t n = 0;
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > uint64_t(hi)) refuse();
    n = int64_t(v.get<uint64_t>());
  } else if (v.is_number_integer()) {
    n = v.get<int64_t>();
  } else if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!(d >= lo && d <= hi) || d != std::floor(d)) refuse();  // NaN fails the first test
    n = int64_t(d);
  } else {
    refuse();
  }
  if (n < lo || n > hi) refuse();
  return int(n);
}

// n and best_of: 1, however it is written.
bool is_one(const json& v) {
  return v.is_number() && v.get<double>() == 1;
}

bool bool_of(const json& v, const char* key) {
  if (!v.is_boolean()) bad_field(fmt::format("'{}' must be true or false, found {}", key, v.dump()));
  return v.get<bool>();
}

// Fields OpenAI defines that this server does not implement: accepted only at their neutral value.
void check_unsupported(const json& body) {
  if (const json* n = field(body, "n"); n && !is_one(*n)) bad_field("'n' must be 1: one choice per request");
  if (const json* b = field(body, "best_of"); b && !is_one(*b)) bad_field("'best_of' must be 1");
  for (const char* key : {"presence_penalty", "frequency_penalty"})
    if (const json* v = field(body, key); v && number_of(*v, key) != 0)
      bad_field(fmt::format("'{}' is not supported (use repetition_penalty)", key));
  if (const json* v = field(body, "logprobs"); v && !(v->is_boolean() && !v->get<bool>()))
    bad_field("'logprobs' is not supported");
  if (const json* v = field(body, "echo"); v && bool_of(*v, "echo")) bad_field("'echo' is not supported");
  if (const json* v = field(body, "suffix"); v && !(v->is_string() && v->get<std::string>().empty()))
    bad_field("'suffix' is not supported");
}

SamplingParams sampling_of(const json& body, const SamplingParams& defaults) {
  SamplingParams p = defaults;
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (const json* v = field(body, key)) p.max_tokens = integer_in(*v, key, 0, INT_MAX);
  }
  if (const json* v = field(body, "temperature")) p.temperature = number_of(*v, "temperature");
  if (const json* v = field(body, "top_p")) p.top_p = number_of(*v, "top_p");
  if (const json* v = field(body, "min_p")) p.min_p = number_of(*v, "min_p");
  if (const json* v = field(body, "top_k")) p.top_k = integer_in(*v, "top_k", 0, INT_MAX);  // 0: off
  for (const char* key : {"repetition_penalty", "repeat_penalty"})
    if (const json* v = field(body, key)) p.repetition_penalty = number_of(*v, key);
  if (const json* v = field(body, "repeat_last_n"))  // -1: every token
    p.repeat_last_n = integer_in(*v, "repeat_last_n", -1, INT_MAX);
  if (const json* v = field(body, "seed")) {
    if (!v->is_number_integer() ||
        (v->is_number_integer() && !v->is_number_unsigned() && v->get<int64_t>() < 0))
      bad_field(fmt::format("'seed' must be an integer >= 0, found {}", v->dump()));
    p.seed = v->get<uint64_t>();
  }
  if (const json* v = field(body, "stop")) {
    p.stop.clear();
    if (v->is_string()) {
      p.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      if (v->size() > 16) bad_field(fmt::format("'stop' has {} strings; at most 16", v->size()));
      for (const auto& s : *v) {
        if (!s.is_string()) bad_field("'stop' must be a string or an array of strings");
        p.stop.push_back(s.get<std::string>());
      }
    } else {
      bad_field("'stop' must be a string or an array of strings");
    }
    for (const auto& s : p.stop)
      if (s.empty()) bad_field("'stop' strings must not be empty");
  }
  try {
    validate(p);
  } catch (const Error& e) {
    bad_field(e.what());
  }
  return p;
}

// The text of a message's content: a string, null, or OpenAI's array of {"type":"text","text":...} parts.
std::string content_of(const json& message, size_t index) {
  const json* c = field(message, "content");
  if (!c) return {};
  if (c->is_string()) return c->get<std::string>();
  if (c->is_array()) {
    std::string text;
    for (const auto& part : *c) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
          !part["text"].is_string())
        bad_field(fmt::format(
            "messages[{}].content: only text parts ({{\"type\":\"text\",\"text\":...}}) are supported",
            index));
      text += part["text"].get<std::string>();
    }
    return text;
  }
  bad_field(fmt::format("messages[{}].content must be a string or an array of text parts", index));
}

// ---- the queue of generations ----------------------------------------------------------------------

// A FIFO line of admitted requests; the one at the front may generate. Bounded: admit() refuses when the
// line already holds one running request and max_waiting waiting ones.
class GenerationQueue {
 public:
  class Ticket {
   public:
    Ticket(GenerationQueue& queue, uint64_t id) : queue_(queue), id_(id) {}
    ~Ticket() { release(); }
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    // Blocks until this request is at the front; false when the queue closed (the server is stopping).
    bool wait_turn() { return queue_.wait_turn(id_); }
    // Leaves the line (idempotent): the next request may start.
    void release() {
      if (!released_) queue_.leave(id_);
      released_ = true;
    }

   private:
    GenerationQueue& queue_;
    uint64_t id_;
    bool released_ = false;
  };

  explicit GenerationQueue(size_t max_waiting) : max_in_line_(max_waiting + 1) {}

  std::unique_ptr<Ticket> admit() {
    std::lock_guard lock(mutex_);
    if (closed_ || line_.size() >= max_in_line_) return nullptr;
    line_.push_back(next_id_);
    return std::make_unique<Ticket>(*this, next_id_++);
  }
  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    changed_.notify_all();
  }
  int running() const {
    std::lock_guard lock(mutex_);
    return running_ ? 1 : 0;
  }
  int waiting() const {
    std::lock_guard lock(mutex_);
    return int(line_.size()) - (running_ ? 1 : 0);
  }

 private:
  bool wait_turn(uint64_t id) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return closed_ || line_.front() == id; });
    if (closed_) return false;
    running_ = true;
    return true;
  }
  void leave(uint64_t id) {
    std::lock_guard lock(mutex_);
    if (!line_.empty() && line_.front() == id) running_ = false;
    line_.erase(std::find(line_.begin(), line_.end(), id));
    changed_.notify_all();
  }

  const size_t max_in_line_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<uint64_t> line_;
  uint64_t next_id_ = 0;
  bool running_ = false, closed_ = false;
};

bool is_loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

}  // namespace

// ---- the server ------------------------------------------------------------------------------------

struct Server::Impl {
  // One parsed request, ready to generate.
  struct Job {
    bool chat = false, stream = false, include_usage = false;
    std::vector<int32_t> prompt;
    SamplingParams params;
    std::string id;
    int64_t created = 0;
  };

  const LoadedModel& model;
  const ServerOptions opt;
  ChatFormat chat_format = ChatFormat::BitNet;
  std::string model_name, bos_text;
  int64_t context_limit = 0;
  int64_t started_at = 0;
  HttpServer http;
  GenerationQueue queue;
  std::thread listener;
  std::atomic<bool> stopping{false}, listener_done{false};
  std::atomic<uint64_t> requests{0};
  std::mutex lifecycle_mutex;
  bool started = false, stopped = false;
  int bound_port = -1;

  Impl(const LoadedModel& m, ServerOptions o)
      : model(m),
        opt(std::move(o)),
        http(HttpLimits{.workers = std::max(opt.http_threads, opt.max_queue + 4),
                        .head_timeout = std::chrono::seconds(std::max(1, opt.header_timeout_s))}),
        queue(size_t(std::max(0, opt.max_queue))) {
    TL_CHECK(model.lm, "serve: no model");
    TL_CHECK(opt.max_queue >= 0, "--max-queue must be >= 0, found {}", opt.max_queue);
    TL_CHECK(opt.http_threads >= 1, "--http-threads must be >= 1, found {}", opt.http_threads);
    TL_CHECK(opt.max_body_bytes > 0, "--max-body must be > 0");
    TL_CHECK(opt.port >= 0 && opt.port <= 65535, "--port must be in 0..65535, found {}", opt.port);
    TL_CHECK(opt.read_timeout_s > 0 && opt.write_timeout_s > 0 && opt.header_timeout_s > 0,
             "server timeouts must be > 0");
    const int64_t max_ctx = model.lm->config().max_position_embeddings;
    TL_CHECK(opt.context >= 0 && opt.context <= max_ctx, "--ctx {} is outside 0..{} (the model's maximum)",
             opt.context, max_ctx);
    validate(opt.defaults);
    context_limit = opt.context > 0 ? opt.context : max_ctx;
    chat_format = opt.chat_format.empty() ? detect_chat_format(model.chat_template)
                                          : parse_chat_format(opt.chat_format);
    model_name = opt.model_name.empty() ? model.name : opt.model_name;
    if (model_name.empty()) model_name = "model";
    if (const int32_t bos = model.tokenizer.bos_id(); bos >= 0) bos_text = model.tokenizer.token(bos);
    started_at = int64_t(std::time(nullptr));
    setup_routes();
  }

  // ---- parsing ----

  std::vector<int32_t> completion_prompt(const json& p) const {
    if (p.is_string()) return model.tokenizer.encode(p.get<std::string>(), /*add_special=*/true);
    if (p.is_array()) {
      if (p.size() == 1 && (p[0].is_string() || p[0].is_array())) return completion_prompt(p[0]);
      std::vector<int32_t> ids;
      const int64_t vocab = model.lm->config().vocab_size;
      for (const auto& v : p) {
        if (v.is_string())
          bad_field("'prompt': several prompts in one request are not supported (n must be 1)");
        if (!v.is_number_integer()) bad_field("'prompt' must be a string or an array of token ids");
        const bool known = v.is_number_unsigned() ? v.get<uint64_t>() < uint64_t(vocab)
                                                  : v.get<int64_t>() >= 0 && v.get<int64_t>() < vocab;
        if (!known) bad_field(fmt::format("'prompt': token id {} is outside 0..{}", v.dump(), vocab - 1));
        ids.push_back(int32_t(v.get<int64_t>()));
      }
      if (ids.empty()) bad_field("'prompt' has no tokens");
      return ids;
    }
    bad_field("'prompt' must be a string or an array of token ids");
  }

  std::vector<int32_t> chat_prompt(const json& body) const {
    const json* messages = field(body, "messages");
    if (!messages || !messages->is_array() || messages->empty())
      bad_field("'messages' must be a non-empty array of {\"role\", \"content\"} objects");
    std::vector<ChatMessage> chat;
    for (size_t i = 0; i < messages->size(); ++i) {
      const json& m = (*messages)[i];
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
        bad_field(fmt::format("messages[{}] must be an object with a string 'role'", i));
      chat.push_back({m["role"].get<std::string>(), content_of(m, i)});
    }
    try {
      return model.tokenizer.encode(render_chat(chat_format, chat, bos_text), /*add_special=*/false);
    } catch (const Error& e) {
      bad_field(e.what());
    }
  }

  Job parse_job(const std::string& text, bool chat) {
    const json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (body.is_discarded()) throw HttpError(400, "invalid_json", "the request body is not valid JSON");
    if (!body.is_object()) throw HttpError(400, "invalid_json", "the request body must be a JSON object");
    check_unsupported(body);
    Job job;
    job.chat = chat;
    job.params = sampling_of(body, opt.defaults);
    if (const json* s = field(body, "stream")) job.stream = bool_of(*s, "stream");
    if (const json* so = field(body, "stream_options"); so && so->is_object()) {
      if (const json* u = field(*so, "include_usage"))
        job.include_usage = bool_of(*u, "stream_options.include_usage");
    }
    if (chat) {
      job.prompt = chat_prompt(body);
      for (auto& s : chat_stop_strings(chat_format))
        if (std::find(job.params.stop.begin(), job.params.stop.end(), s) == job.params.stop.end())
          job.params.stop.push_back(s);
    } else {
      const json* prompt = field(body, "prompt");
      if (!prompt) bad_field("'prompt' is required");
      job.prompt = completion_prompt(*prompt);
    }
    for (int32_t id : model.stop_ids)
      if (std::find(job.params.stop_ids.begin(), job.params.stop_ids.end(), id) == job.params.stop_ids.end())
        job.params.stop_ids.push_back(id);
    if (int64_t(job.prompt.size()) >= context_limit)
      throw HttpError(
          400, "context_length_exceeded",
          fmt::format("the prompt has {} tokens; the context holds {} tokens (prompt and completion)",
                      job.prompt.size(), context_limit));
    job.id = fmt::format("{}-{:x}-{}", chat ? "chatcmpl" : "cmpl", started_at, requests.fetch_add(1));
    job.created = int64_t(std::time(nullptr));
    return job;
  }

  // ---- responses ----

  json envelope(const Job& job, const char* object) const {
    return {{"id", job.id}, {"object", object}, {"created", job.created}, {"model", model_name}};
  }

  static json usage_of(const GenerationResult& r) {
    return {{"prompt_tokens", r.prompt_tokens},
            {"completion_tokens", r.completion_tokens},
            {"total_tokens", r.prompt_tokens + r.completion_tokens}};
  }

  // llama.cpp's "timings" extension: how fast the prompt and the completion went.
  static json timings_of(const GenerationResult& r) {
    return {{"prompt_n", r.prompt_tokens - r.reused_prompt_tokens},
            {"prompt_ms", r.prompt_seconds * 1e3},
            {"prompt_per_second", r.prompt_tokens_per_s},
            {"predicted_n", r.completion_tokens},
            {"predicted_ms", r.generation_seconds * 1e3},
            {"predicted_per_second", r.generation_tokens_per_s}};
  }

  json full_response(const Job& job, const GenerationResult& r) const {
    json out = envelope(job, job.chat ? "chat.completion" : "text_completion");
    json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", r.finish_reason}};
    if (job.chat)
      choice["message"] = {{"role", "assistant"}, {"content", r.text}};
    else
      choice["text"] = r.text;
    out["choices"] = json::array({choice});
    out["usage"] = usage_of(r);
    out["timings"] = timings_of(r);
    return out;
  }

  // A streaming chunk: text (or a finish reason, with empty text).
  json chunk(const Job& job, const std::string& text, const json& finish_reason, bool first = false) const {
    json out = envelope(job, job.chat ? "chat.completion.chunk" : "text_completion");
    json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason}};
    if (job.chat) {
      json delta = json::object();
      if (first) delta["role"] = "assistant";
      if (first || !text.empty()) delta["content"] = text;
      choice["delta"] = delta;
    } else {
      choice["text"] = text;
    }
    out["choices"] = json::array({choice});
    return out;
  }

  GenerationResult run(const Job& job, const PieceCallback& on_piece) const {
    return generate_text(*model.lm, model.tokenizer, job.prompt, job.params, on_piece, opt.context);
  }

  void answer(const Job& job, GenerationQueue::Ticket& ticket, httplib::Response& res) {
    if (!ticket.wait_turn()) throw HttpError(503, "shutting_down", "the server is stopping");
    GenerationResult r;
    try {
      r = run(job, [&](std::string_view, int32_t) { return !stopping.load(); });
    } catch (const std::exception& e) {
      throw HttpError(500, "generation_failed", e.what());
    }
    ticket.release();
    if (r.finish_reason == "cancelled") throw HttpError(503, "shutting_down", "the server is stopping");
    res.set_content(dump(full_response(job, r)), "application/json");
  }

  // Runs on the connection's thread after the headers went out. Returns false when the client is gone.
  bool stream(const Job& job, GenerationQueue::Ticket& ticket, httplib::DataSink& sink) {
    const auto send = [&](const json& j) {
      const std::string event = "data: " + dump(j) + "\n\n";
      return sink.write(event.data(), event.size());
    };
    const auto finish_with_error = [&](int status, const std::string& code, const std::string& message) {
      ticket.release();
      send(error_json(status, code, message));
      sink.done();
      return true;
    };
    try {
      if (!ticket.wait_turn()) return finish_with_error(503, "shutting_down", "the server is stopping");
      if (!sink.is_writable()) {  // the client left while it waited
        ticket.release();
        return false;
      }
      if (job.chat && !send(chunk(job, "", nullptr, /*first=*/true))) {
        ticket.release();
        return false;
      }
      bool client_gone = false;
      const GenerationResult r = run(job, [&](std::string_view piece, int32_t) {
        if (stopping.load()) return false;
        const bool ok = piece.empty() ? sink.is_writable() : send(chunk(job, std::string(piece), nullptr));
        client_gone = !ok;
        return ok;
      });
      ticket.release();
      if (client_gone) {
        log_info("{}: the client disconnected after {} tokens; generation stopped", job.id,
                 r.completion_tokens);
        return false;
      }
      if (r.finish_reason == "cancelled")
        return finish_with_error(503, "shutting_down", "the server is stopping");
      send(chunk(job, "", r.finish_reason));
      if (job.include_usage) {
        json usage = envelope(job, job.chat ? "chat.completion.chunk" : "text_completion");
        usage["choices"] = json::array();
        usage["usage"] = usage_of(r);
        send(usage);
      }
      static const std::string kDone = "data: [DONE]\n\n";
      sink.write(kDone.data(), kDone.size());
      sink.done();
      return true;
    } catch (const std::exception& e) {  // nothing may escape into httplib's worker thread
      return finish_with_error(500, "generation_failed", e.what());
    }
  }

  std::string too_large_message() const {
    return fmt::format("the request body is larger than the server's limit of {} bytes", opt.max_body_bytes);
  }

  // Reads a request's body, up to max_body_bytes, whatever its Content-Type says: the API is JSON, and
  // `curl -d` labels it application/x-www-form-urlencoded (cpp-httplib's own reading would cap such a body
  // at 8 KB). Counting here also bounds chunked and compressed bodies, which cpp-httplib 0.11 does not.
  // False, with the error in res, when it cannot: 413 over the limit, 415 for multipart/form-data (not
  // JSON; drained first), 400 when the body's framing is broken.
  bool read_body(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read,
                 std::string& body) const {
    bool too_large = false;
    const auto keep = [&](const char* data, size_t n) {
      too_large = n > opt.max_body_bytes - body.size();
      if (!too_large) body.append(data, n);
      return !too_large;
    };
    const bool multipart = req.is_multipart_form_data();
    const bool ok =
        multipart ? read([](const httplib::MultipartFormData&) { return true; }, keep) : read(keep);
    if (too_large || res.status == 413) {  // counted here, or announced by Content-Length (and skipped)
      if (too_large) HttpServer::close_after_response(res);  // the rest of it is still on its way
      send_error(res, 413, "payload_too_large", too_large_message());
      return false;
    }
    if (!ok) {
      HttpServer::close_after_response(res);
      send_error(res, 400, "invalid_body",
                 "the request body could not be read: broken chunked or multipart framing, or the client "
                 "stopped sending");
      return false;
    }
    if (multipart) {
      send_error(res, 415, "unsupported_media_type",
                 "the request body must be a JSON object (Content-Type: application/json); "
                 "multipart/form-data is not accepted");
      return false;
    }
    return true;
  }

  void handle_generation(const std::string& body, httplib::Response& res, bool chat) {
    try {
      std::shared_ptr<Job> job;
      try {
        job = std::make_shared<Job>(parse_job(body, chat));
      } catch (const Error& e) {  // the tokenizer or a validator refused the input
        throw HttpError(400, "invalid_request", e.what());
      }
      std::shared_ptr<GenerationQueue::Ticket> ticket = queue.admit();
      if (!ticket)
        throw HttpError(503, stopping ? "shutting_down" : "queue_full",
                        stopping
                            ? std::string("the server is stopping")
                            : fmt::format("the server is busy: {} requests are waiting already; retry later",
                                          opt.max_queue));
      if (!job->stream) return answer(*job, *ticket, res);
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream",
          [this, job, ticket](size_t, httplib::DataSink& sink) { return stream(*job, *ticket, sink); });
    } catch (const HttpError& e) {
      send_error(res, e.status, e.code, e.what());
    }
  }

  // ---- routes ----

  void setup_routes() {
    http.set_payload_max_length(opt.max_body_bytes);
    http.set_read_timeout(opt.read_timeout_s, 0);
    // A client that announces a body over the limit and asks before sending it gets 413 without sending.
    http.set_expect_100_continue_handler([this](const httplib::Request& req, httplib::Response& res) {
      const std::string length = req.get_header_value("Content-Length");
      if (length.empty() || std::strtoull(length.c_str(), nullptr, 10) <= opt.max_body_bytes) return 100;
      res.status = 413;  // httplib sends res as it is: the error handler adds the JSON body
      return 413;
    });
    http.set_write_timeout(opt.write_timeout_s, 0);

    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      const json j = {{"status", "ok"}, {"running", queue.running()}, {"waiting", queue.waiting()}};
      res.set_content(dump(j), "application/json");
    });
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      const json m = {{"id", model_name},
                      {"object", "model"},
                      {"created", started_at},
                      {"owned_by", "ternlab"},
                      {"context_length", context_limit},
                      {"description", model.lm->describe()},
                      {"chat_format", chat_format_name(chat_format)}};
      res.set_content(dump(json{{"object", "list"}, {"data", json::array({m})}}), "application/json");
    });
    // Every route that may carry a body reads it with read_body (a content reader): cpp-httplib never
    // reads one itself, so its 8 KB cap on form-encoded bodies does not apply.
    using BodyHandler = std::function<void(const httplib::Request&, httplib::Response&, const std::string&)>;
    const auto with_body = [this](BodyHandler handle) {
      return [this, handle](const httplib::Request& req, httplib::Response& res,
                            const httplib::ContentReader& read) {
        std::string body;
        if (read_body(req, res, read, body)) handle(req, res, body);
      };
    };
    http.Post("/v1/completions",
              with_body([this](const httplib::Request&, httplib::Response& res, const std::string& body) {
                handle_generation(body, res, false);
              }));
    http.Post("/v1/chat/completions",
              with_body([this](const httplib::Request&, httplib::Response& res, const std::string& body) {
                handle_generation(body, res, true);
              }));

    // Known paths with the wrong method: 405 with the method that works.
    const auto not_allowed = [](const char* allowed) {
      return [allowed](const httplib::Request& req, httplib::Response& res, const std::string& = {}) {
        res.set_header("Allow", allowed);
        send_error(res, 405, "method_not_allowed",
                   fmt::format("{} {}: use {}", req.method, req.path, allowed));
      };
    };
    for (const char* path : {"/health", "/v1/models"}) {
      http.Post(path, with_body(not_allowed("GET")));
      http.Put(path, with_body(not_allowed("GET")));
      http.Patch(path, with_body(not_allowed("GET")));
      http.Delete(path, with_body(not_allowed("GET")));
    }
    for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
      http.Get(path, not_allowed("POST"));
      http.Put(path, with_body(not_allowed("POST")));
      http.Patch(path, with_body(not_allowed("POST")));
      http.Delete(path, with_body(not_allowed("POST")));
    }
    // Unknown paths: the body read (and dropped) like any other, then 404.
    const auto not_found = [](const httplib::Request& req, httplib::Response& res, const std::string&) {
      send_error(res, 404, "not_found", fmt::format("no such endpoint: {} {}", req.method, req.path));
    };
    http.Post(".*", with_body(not_found));
    http.Put(".*", with_body(not_found));
    http.Patch(".*", with_body(not_found));
    http.Delete(".*", with_body(not_found));

    // Whatever httplib answers by itself (unknown path, body too large, malformed HTTP) gets a JSON body.
    http.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req,
                                                                       httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // ours, already JSON
      switch (res.status) {
        case 404:
          send_error(res, 404, "not_found", fmt::format("no such endpoint: {} {}", req.method, req.path));
          break;
        case 413:
          // Ours: a Content-Length over the limit with Expect: 100-continue, refused before the body came
          // (whether the client sends it anyway is unknown: the connection closes). Or, with a body read,
          // cpp-httplib's cap on form-encoded bodies, for a method none of the routes takes.
          if (req.body.empty()) HttpServer::close_after_response(res);
          send_error(res, 413, "payload_too_large",
                     req.body.empty()
                         ? too_large_message()
                         : fmt::format("form-encoded bodies (application/x-www-form-urlencoded) are limited "
                                       "to {} bytes here; send JSON with Content-Type: application/json",
                                       CPPHTTPLIB_FORM_URL_ENCODED_PAYLOAD_MAX_LENGTH));
          break;
        default:  // malformed HTTP (400), a URI over 8 KB (414), ...: what follows cannot be trusted
          HttpServer::close_after_response(res);
          send_error(res, res.status, res.status >= 500 ? "internal_error" : "bad_request",
                     res.status == 400 ? std::string("malformed HTTP request")
                                       : fmt::format("the request failed with HTTP status {}", res.status));
      }
      return httplib::Server::HandlerResponse::Handled;
    }));
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      send_error(res, 500, "internal_error", what);
    });
    http.set_logger([](const httplib::Request& req, const httplib::Response& res) {
      log_info("{} {} {}", req.method, req.path, res.status);
    });
  }

  int start() {
    std::lock_guard lock(lifecycle_mutex);
    TL_CHECK(!started, "serve: the server was started already");
    if (!is_loopback(opt.host))
      log_warn("listening on {}: the server is reachable from other machines and has no authentication",
               opt.host);
    bound_port = opt.port == 0 ? http.bind_to_any_port(opt.host)
                               : (http.bind_to_port(opt.host, opt.port) ? opt.port : -1);
    TL_CHECK(bound_port > 0, "serve: cannot listen on {}:{} ({})", opt.host, opt.port, std::strerror(errno));
    started = true;
    listener = std::thread([this] {
      http.listen_after_bind();
      listener_done = true;
    });
    // httplib's stop() only acts on a running server: wait until the accept loop is up.
    while (!http.is_running() && !listener_done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return bound_port;
  }

  void stop() {
    std::lock_guard lock(lifecycle_mutex);
    if (!started || stopped) return;
    stopped = true;
    stopping = true;
    queue.close();
    http.stop();
    if (listener.joinable()) listener.join();  // listen_after_bind returns after the workers finished
  }
};

Server::Server(const LoadedModel& model, ServerOptions options)
    : impl_(std::make_unique<Impl>(model, std::move(options))) {}

Server::~Server() {
  stop();
}

int Server::start() {
  return impl_->start();
}
void Server::stop() {
  impl_->stop();
}
int Server::port() const {
  return impl_->bound_port;
}
int Server::running() const {
  return impl_->queue.running();
}
int Server::waiting() const {
  return impl_->queue.waiting();
}

}  // namespace tl
