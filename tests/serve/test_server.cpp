// The HTTP server, in process, driven by a real HTTP client over loopback: endpoints, streaming, errors,
// limits, concurrency, disconnects and the bounded queue.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "../common/test_util.hpp"
#include "core/log.hpp"
#include "infer/chat_template.hpp"
#include "infer/reference_model.hpp"
#include "infer/text_generation.hpp"
#include "model/config.hpp"
#include "model/model.hpp"
#include "serve/server.hpp"

namespace tl {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

// ---- models ----

const ReferenceModel& tiny_model() {
  static const ReferenceModel lm = [] {
    Model m = make_model(config_preset("tiny"));  // 256 positions, vocabulary 512
    init_random(m, 77);
    return ReferenceModel(std::move(m));
  }();
  return lm;
}

// Another model's sessions with a hook before every decode (to slow generation down or hold it).
class HookedModel : public LanguageModel {
 public:
  HookedModel(const LanguageModel& inner, std::function<void()> hook)
      : inner_(inner), hook_(std::move(hook)) {}
  const BitNetConfig& config() const override { return inner_.config(); }
  std::string describe() const override { return "hooked " + inner_.describe(); }
  std::unique_ptr<DecodeSession> new_session(int64_t capacity) const override {
    return std::make_unique<Session>(inner_.new_session(capacity), hook_);
  }

 private:
  class Session : public DecodeSession {
   public:
    Session(std::unique_ptr<DecodeSession> inner, const std::function<void()>& hook)
        : inner_(std::move(inner)), hook_(hook) {}
    int64_t length() const override { return inner_->length(); }
    int64_t capacity() const override { return inner_->capacity(); }
    void truncate(int64_t n) override { inner_->truncate(n); }
    std::span<const float> decode(std::span<const int32_t> tokens) override {
      hook_();
      return inner_->decode(tokens);
    }

   private:
    std::unique_ptr<DecodeSession> inner_;
    const std::function<void()>& hook_;
  };
  const LanguageModel& inner_;
  std::function<void()> hook_;
};

LoadedModel loaded(std::unique_ptr<LanguageModel> lm, std::vector<int32_t> stop_ids = {257}) {
  return LoadedModel{std::move(lm), Tokenizer::byte_level(512), "", std::move(stop_ids), "tiny-test"};
}

// A LanguageModel view of the shared tiny model (LoadedModel owns its model).
class Borrowed : public HookedModel {
 public:
  explicit Borrowed(const LanguageModel& inner) : HookedModel(inner, [] {}) {}
};

// ---- HTTP helpers ----

struct Reply {
  int status = 0;
  json body;
  std::string raw, content_type, allow;
};

Reply to_reply(const httplib::Result& r) {
  Reply out;
  if (!r) return out;
  out.status = r->status;
  out.raw = r->body;
  out.content_type = r->get_header_value("Content-Type");
  out.allow = r->get_header_value("Allow");
  out.body = json::parse(r->body, nullptr, false);
  return out;
}

Reply post(int port, const std::string& path, const std::string& body) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  return to_reply(c.Post(path.c_str(), body, "application/json"));
}
Reply post(int port, const std::string& path, const json& body) {
  return post(port, path, body.dump());
}
Reply get(int port, const std::string& path) {
  httplib::Client c("127.0.0.1", port);
  return to_reply(c.Get(path.c_str()));
}
// A POST with the given Content-Type ("": none).
Reply post_as(int port, const std::string& path, const std::string& body, const std::string& content_type) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  return to_reply(c.Post(path.c_str(), body, content_type.c_str()));
}

// The events of a Server-Sent Events body; `done` when it ended with "data: [DONE]".
struct Events {
  std::vector<json> events;
  bool done = false;
  bool well_formed = true;
};
Events parse_sse(const std::string& body) {
  Events out;
  size_t at = 0;
  while (at < body.size()) {
    const size_t end = body.find("\n\n", at);
    if (end == std::string::npos || body.compare(at, 6, "data: ") != 0 || out.done) {
      out.well_formed = false;
      break;
    }
    const std::string data = body.substr(at + 6, end - at - 6);
    if (data == "[DONE]") {
      out.done = true;
    } else {
      out.events.push_back(json::parse(data, nullptr, false));
      if (out.events.back().is_discarded()) out.well_formed = false;
    }
    at = end + 2;
  }
  return out;
}

void expect_error(const Reply& r, int status, const std::string& code) {
  EXPECT_EQ(r.status, status) << r.raw;
  EXPECT_EQ(r.content_type, "application/json");
  ASSERT_TRUE(r.body.is_object()) << r.raw;
  ASSERT_TRUE(r.body.contains("error")) << r.raw;
  EXPECT_TRUE(r.body["error"]["message"].is_string());
  EXPECT_TRUE(r.body["error"]["type"].is_string());
  EXPECT_EQ(r.body["error"]["code"], code) << r.raw;
}

template <class F>
bool eventually(F&& condition, std::chrono::milliseconds limit = 10s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (condition()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return condition();
}

// What the server should answer: generate_text on the same model with the server's defaults.
GenerationResult expected_completion(const std::vector<int32_t>& prompt, SamplingParams p) {
  p.stop_ids = {257};
  return generate_text(tiny_model(), Tokenizer::byte_level(512), prompt, p);
}
SamplingParams server_defaults() {
  return ServerOptions{}.defaults;
}

int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// Sends raw bytes on a new connection and returns everything the server answers until it closes.
std::string raw_exchange(int port, const std::string& bytes) {
  const int fd = connect_loopback(port);
  if (fd < 0) return "no connection";
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += size_t(n);
  }
  std::string answer;
  char buf[1024];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) answer.append(buf, size_t(n));
  ::close(fd);
  return answer;
}

// The JSON body of a raw HTTP answer.
json body_of(const std::string& answer) {
  const size_t at = answer.find("\r\n\r\n");
  return at == std::string::npos ? json() : json::parse(answer.substr(at + 4), nullptr, false);
}

// ---- the shared server ----

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    set_log_level(LogLevel::Warn);
    model_ = new LoadedModel(loaded(std::make_unique<Borrowed>(tiny_model())));
    ServerOptions opt;
    opt.port = 0;
    opt.max_body_bytes = 256 << 10;
    server_ = new Server(*model_, opt);
    port_ = server_->start();
  }
  static void TearDownTestSuite() {
    server_->stop();
    delete server_;
    delete model_;
  }
  static LoadedModel* model_;
  static Server* server_;
  static int port_;
};
LoadedModel* ServerTest::model_ = nullptr;
Server* ServerTest::server_ = nullptr;
int ServerTest::port_ = 0;

TEST_F(ServerTest, HealthAndModels) {
  EXPECT_GT(port_, 0);
  auto r = get(port_, "/health");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body["status"], "ok");
  EXPECT_EQ(r.body["running"], 0);
  r = get(port_, "/v1/models");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body["object"], "list");
  ASSERT_EQ(r.body["data"].size(), 1u);
  EXPECT_EQ(r.body["data"][0]["id"], "tiny-test");
  EXPECT_EQ(r.body["data"][0]["object"], "model");
  EXPECT_EQ(r.body["data"][0]["context_length"], 256);
  EXPECT_EQ(ServerOptions{}.max_body_bytes, size_t(1) << 20);
  EXPECT_EQ(ServerOptions{}.host, "127.0.0.1");
}

TEST_F(ServerTest, CompletionEqualsDirectGeneration) {
  const Tokenizer tok = Tokenizer::byte_level(512);
  for (double temperature : {0.0, 0.9}) {
    const auto r = post(port_, "/v1/completions",
                        json{{"model", "x"},
                             {"prompt", "Once upon a time"},
                             {"max_tokens", 12},
                             {"temperature", temperature},
                             {"seed", 5}});
    ASSERT_EQ(r.status, 200) << r.raw;
    SamplingParams p = server_defaults();
    p.max_tokens = 12;
    p.temperature = temperature;
    p.seed = 5;
    const auto want = expected_completion(tok.encode("Once upon a time", true), p);
    EXPECT_EQ(r.body["object"], "text_completion");
    EXPECT_EQ(r.body["model"], "tiny-test");
    EXPECT_TRUE(r.body["id"].get<std::string>().starts_with("cmpl-"));
    ASSERT_EQ(r.body["choices"].size(), 1u);
    EXPECT_EQ(r.body["choices"][0]["text"], want.text);
    EXPECT_EQ(r.body["choices"][0]["finish_reason"], want.finish_reason);
    EXPECT_EQ(r.body["usage"]["prompt_tokens"], 17);  // bos + 16 bytes
    EXPECT_EQ(r.body["usage"]["completion_tokens"], want.completion_tokens);
    EXPECT_EQ(r.body["usage"]["total_tokens"], 17 + want.completion_tokens);
  }
}

TEST_F(ServerTest, PromptAsTokenIds) {
  const auto by_text =
      post(port_, "/v1/completions", json{{"prompt", "Hi"}, {"max_tokens", 6}, {"temperature", 0}});
  const auto by_ids = post(port_, "/v1/completions",
                           json{{"prompt", {256, 'H', 'i'}}, {"max_tokens", 6}, {"temperature", 0}});
  ASSERT_EQ(by_ids.status, 200) << by_ids.raw;
  EXPECT_EQ(by_ids.body["choices"][0]["text"], by_text.body["choices"][0]["text"]);
  EXPECT_EQ(by_ids.body["usage"]["prompt_tokens"], 3);
  const auto nested = post(
      port_, "/v1/completions",
      json{{"prompt", json::array({json::array({256, 'H', 'i'})})}, {"max_tokens", 6}, {"temperature", 0}});
  EXPECT_EQ(nested.body["choices"][0]["text"], by_text.body["choices"][0]["text"]);
}

TEST_F(ServerTest, StreamingCompletionChunksEndWithDone) {
  const json request = {{"prompt", "The sky"}, {"max_tokens", 20}, {"temperature", 0}};
  const auto whole = post(port_, "/v1/completions", request);
  json streaming = request;
  streaming["stream"] = true;
  const auto r = post(port_, "/v1/completions", streaming);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/event-stream");
  const Events e = parse_sse(r.raw);
  EXPECT_TRUE(e.well_formed) << r.raw;
  EXPECT_TRUE(e.done);
  ASSERT_GE(e.events.size(), 2u);
  std::string text;
  for (size_t i = 0; i < e.events.size(); ++i) {
    const json& ev = e.events[i];
    EXPECT_EQ(ev["object"], "text_completion");
    EXPECT_EQ(ev["choices"][0]["index"], 0);
    text += ev["choices"][0]["text"].get<std::string>();
    if (i + 1 < e.events.size()) {
      EXPECT_TRUE(ev["choices"][0]["finish_reason"].is_null());
    }
  }
  EXPECT_EQ(text, whole.body["choices"][0]["text"]);
  EXPECT_EQ(e.events.back()["choices"][0]["finish_reason"], whole.body["choices"][0]["finish_reason"]);
}

TEST_F(ServerTest, ChatCompletionRendersTheTemplate) {
  const json messages = json::array(
      {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hello there"}}});
  const auto r = post(port_, "/v1/chat/completions",
                      json{{"messages", messages}, {"max_tokens", 10}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.raw;
  const Tokenizer tok = Tokenizer::byte_level(512);
  const std::vector<ChatMessage> chat = {{"system", "Be brief."}, {"user", "Hello there"}};
  const auto prompt = tok.encode(render_chat(ChatFormat::BitNet, chat, "<|begin_of_text|>"));
  SamplingParams p = server_defaults();
  p.max_tokens = 10;
  p.temperature = 0;
  p.stop = {"<|eot_id|>"};
  const auto want = expected_completion(prompt, p);
  EXPECT_EQ(r.body["object"], "chat.completion");
  EXPECT_TRUE(r.body["id"].get<std::string>().starts_with("chatcmpl-"));
  EXPECT_EQ(r.body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r.body["choices"][0]["message"]["content"], want.text);
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], int64_t(prompt.size()));

  // The same as a stream: a role delta first, content deltas, a finish reason, then [DONE].
  const auto s = post(port_, "/v1/chat/completions",
                      json{{"messages", messages},
                           {"max_tokens", 10},
                           {"temperature", 0},
                           {"stream", true},
                           {"stream_options", {{"include_usage", true}}}});
  ASSERT_EQ(s.status, 200);
  const Events e = parse_sse(s.raw);
  EXPECT_TRUE(e.well_formed && e.done) << s.raw;
  ASSERT_GE(e.events.size(), 3u);
  EXPECT_EQ(e.events.front()["object"], "chat.completion.chunk");
  EXPECT_EQ(e.events.front()["choices"][0]["delta"]["role"], "assistant");
  std::string content;
  for (size_t i = 0; i + 1 < e.events.size(); ++i)
    content += e.events[i]["choices"][0]["delta"].value("content", "");
  EXPECT_EQ(content, want.text);
  const json& finish = e.events[e.events.size() - 2];
  EXPECT_EQ(finish["choices"][0]["finish_reason"], want.finish_reason);
  EXPECT_TRUE(finish["choices"][0]["delta"].empty());
  const json& usage = e.events.back();  // include_usage: a last chunk without choices
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], want.completion_tokens);
}

TEST_F(ServerTest, BadRequestsGetOpenAiErrors) {
  expect_error(post(port_, "/v1/completions", std::string("{\"prompt\": \"hi\"")), 400, "invalid_json");
  expect_error(post(port_, "/v1/completions", std::string("[1, 2]")), 400, "invalid_json");
  expect_error(post(port_, "/v1/completions", json{{"max_tokens", 3}}), 400, "invalid_field");
  expect_error(post(port_, "/v1/completions", json{{"prompt", "hi"}, {"temperature", -1}}), 400,
               "invalid_field");
  expect_error(post(port_, "/v1/completions", json{{"prompt", "hi"}, {"temperature", "hot"}}), 400,
               "invalid_field");
  expect_error(post(port_, "/v1/completions", json{{"prompt", "hi"}, {"top_p", 0}}), 400, "invalid_field");
  expect_error(post(port_, "/v1/completions", json{{"prompt", "hi"}, {"top_k", -3}}), 400, "invalid_field");
  expect_error(post(port_, "/v1/completions", json{{"prompt", "hi"}, {"max_tokens", -5}}), 400,
               "invalid_field");
  expect_error(post(port_, "/v1/completions", json{{"prompt", "hi"}, {"n", 2}}), 400, "invalid_field");
  expect_error(post(port_, "/v1/completions", json{{"prompt", "hi"}, {"stop", 5}}), 400, "invalid_field");
  expect_error(post(port_, "/v1/completions", json{{"prompt", "hi"}, {"stream", "yes"}}), 400,
               "invalid_field");
  expect_error(post(port_, "/v1/completions", json{{"prompt", {1, 2, 9999}}}), 400, "invalid_field");
  expect_error(post(port_, "/v1/completions", json{{"prompt", json::array()}}), 400, "invalid_field");
  expect_error(post(port_, "/v1/completions", json{{"prompt", {"a", "b"}}}), 400, "invalid_field");
  // 300 tokens do not fit the 256-token context.
  const auto too_long = post(port_, "/v1/completions", json{{"prompt", std::vector<int>(300, 'a')}});
  expect_error(too_long, 400, "context_length_exceeded");
  EXPECT_NE(too_long.body["error"]["message"].get<std::string>().find("300 tokens"), std::string::npos);
  expect_error(post(port_, "/v1/chat/completions", json{{"messages", json::array()}}), 400, "invalid_field");
  expect_error(post(port_, "/v1/chat/completions",
                    json{{"messages", json::array({{{"role", "tool"}, {"content", "x"}}})}}),
               400, "invalid_field");
  expect_error(post(port_, "/v1/chat/completions", json{{"messages", json::array({{{"content", "x"}}})}}),
               400, "invalid_field");
  // The server is fine afterwards.
  EXPECT_EQ(get(port_, "/health").status, 200);
}

TEST_F(ServerTest, UnknownPathsAndWrongMethods) {
  expect_error(get(port_, "/v1/nothing"), 404, "not_found");
  expect_error(post(port_, "/v2/completions", json{{"prompt", "x"}}), 404, "not_found");
  const auto r = get(port_, "/v1/completions");
  expect_error(r, 405, "method_not_allowed");
  EXPECT_EQ(r.allow, "POST");
  const auto h = post(port_, "/health", json::object());
  expect_error(h, 405, "method_not_allowed");
  EXPECT_EQ(h.allow, "GET");
}

TEST_F(ServerTest, OversizedBodyIs413) {
  json big = {{"prompt", std::string(300 << 10, 'a')}};  // 300 KiB > the 256 KiB limit of this server
  expect_error(post(port_, "/v1/completions", big), 413, "payload_too_large");
  EXPECT_EQ(get(port_, "/health").status, 200);

  // A client that asks first (Expect: 100-continue, as curl does for large bodies) is refused at once.
  const int fd = connect_loopback(port_);
  ASSERT_GE(fd, 0);
  const std::string head =
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
      "Content-Length: 2000000\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(::send(fd, head.data(), head.size(), 0), ssize_t(head.size()));
  std::string answer;
  char buf[1024];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) answer.append(buf, size_t(n));
  ::close(fd);
  EXPECT_EQ(answer.rfind("HTTP/1.1 413", 0), 0u) << answer;
  EXPECT_NE(answer.find("payload_too_large"), std::string::npos) << answer;
}

// `curl -d @file` sends application/x-www-form-urlencoded; cpp-httplib refuses such bodies over 8 KB on
// its own (413). The API is JSON whatever the Content-Type says, up to the server's own limit.
TEST_F(ServerTest, JsonBodiesOver8KbAreAcceptedWhateverTheContentType) {
  const json request = {
      {"prompt", "Hi"}, {"max_tokens", 3}, {"temperature", 0}, {"padding", std::string(20 << 10, 'x')}};
  for (const std::string type :
       {"application/x-www-form-urlencoded", "text/plain", "application/json; charset=utf-8", ""}) {
    const Reply r = post_as(port_, "/v1/completions", request.dump(), type);
    EXPECT_EQ(r.status, 200) << "Content-Type '" << type << "': " << r.raw;
    EXPECT_EQ(r.body["usage"]["completion_tokens"], 3) << type;
  }
  json chat = {
      {"messages", json::array({{{"role", "user"}, {"content", std::string(12 << 10, ' ') + "Hi"}}})},
      {"max_tokens", 2},
      {"temperature", 0}};
  const Reply c = post_as(port_, "/v1/chat/completions", chat.dump(), "application/x-www-form-urlencoded");
  EXPECT_EQ(c.status, 200) << c.raw;
  // A form-encoded body that is not JSON is refused as such, not as too large.
  expect_error(post_as(port_, "/v1/completions", "prompt=" + std::string(10 << 10, 'a'),
                       "application/x-www-form-urlencoded"),
               400, "invalid_json");
  // Paths without a body of their own answer 404 / 405, not 413.
  expect_error(post_as(port_, "/v1/nothing", request.dump(), "application/x-www-form-urlencoded"), 404,
               "not_found");
  expect_error(post_as(port_, "/health", request.dump(), "application/x-www-form-urlencoded"), 405,
               "method_not_allowed");
  // multipart/form-data is not JSON: 415, saying what to send.
  const std::string multipart =
      "--XyZ\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nHi\r\n--XyZ--\r\n";
  const Reply m = post_as(port_, "/v1/completions", multipart, "multipart/form-data; boundary=XyZ");
  expect_error(m, 415, "unsupported_media_type");
  EXPECT_NE(m.body["error"]["message"].get<std::string>().find("application/json"), std::string::npos)
      << m.raw;
  EXPECT_EQ(get(port_, "/health").status, 200);
}

// A 413 names the limit that fired: this server's (256 KiB here), whatever the Content-Type and framing.
TEST_F(ServerTest, OversizedBodiesNameTheLimitThatFired) {
  const std::string big = json{{"prompt", std::string(300 << 10, 'a')}}.dump();
  for (const std::string type : {"application/x-www-form-urlencoded", "application/json", ""}) {
    const Reply r = post_as(port_, "/v1/completions", big, type);
    expect_error(r, 413, "payload_too_large");
    EXPECT_NE(r.raw.find("262144 bytes"), std::string::npos) << type << ": " << r.raw;
  }
  // A chunked body has no Content-Length to check up front: it is counted as it arrives.
  std::string chunked =
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
  for (size_t at = 0; at < big.size(); at += 4096) {
    const std::string part = big.substr(at, 4096);
    chunked += fmt::format("{:x}\r\n{}\r\n", part.size(), part);
  }
  chunked += "0\r\n\r\n";
  const std::string answer = raw_exchange(port_, chunked);
  EXPECT_EQ(answer.rfind("HTTP/1.1 413", 0), 0u) << answer.substr(0, 300);
  EXPECT_EQ(body_of(answer)["error"]["code"], "payload_too_large") << answer.substr(0, 300);
  EXPECT_NE(answer.find("262144 bytes"), std::string::npos) << answer.substr(0, 300);
  EXPECT_EQ(get(port_, "/health").status, 200);
}

// Integers too large for the field (or for any integer type) are reported as such: field, value, range.
TEST_F(ServerTest, OutOfRangeIntegersNameTheFieldTheValueAndTheRange) {
  struct Case {
    std::string field;
    json value;
    std::string shown, range;
  };
  const std::vector<Case> cases = {
      {"max_tokens", 1e30, "1e+30", "[0, 2147483647]"},
      {"max_tokens", uint64_t(1) << 63, "9223372036854775808", "[0, 2147483647]"},
      {"max_tokens", ~uint64_t(0), "18446744073709551615", "[0, 2147483647]"},
      {"max_tokens", int64_t(1) << 31, "2147483648", "[0, 2147483647]"},
      {"max_tokens", -5, "-5", "[0, 2147483647]"},
      {"max_completion_tokens", 1e19, "1e+19", "[0, 2147483647]"},
      {"top_k", uint64_t(1) << 63, "9223372036854775808", "[0, 2147483647]"},
      {"top_k", 1e30, "1e+30", "[0, 2147483647]"},
      {"top_k", -3, "-3", "[0, 2147483647]"},
      {"top_k", 2.5, "2.5", "[0, 2147483647]"},
      {"repeat_last_n", -1e30, "-1e+30", "[-1, 2147483647]"},
      {"repeat_last_n", uint64_t(1) << 63, "9223372036854775808", "[-1, 2147483647]"},
  };
  for (const Case& c : cases) {
    const Reply r = post(port_, "/v1/completions", json{{"prompt", "hi"}, {c.field, c.value}});
    expect_error(r, 400, "invalid_field");
    const std::string message = r.body["error"]["message"].get<std::string>();
    EXPECT_NE(message.find("'" + c.field + "'"), std::string::npos) << message;
    EXPECT_NE(message.find(c.shown), std::string::npos) << message;
    EXPECT_NE(message.find(c.range), std::string::npos) << message;
  }
  // n and best_of: anything but 1 is refused, however large.
  for (const char* field : {"n", "best_of"}) {
    const Reply r = post(port_, "/v1/completions", json{{"prompt", "hi"}, {field, (uint64_t(1) << 63) + 1}});
    expect_error(r, 400, "invalid_field");
  }
  // Integral floats inside the range still count as integers.
  const Reply ok = post(port_, "/v1/completions",
                        json{{"prompt", "hi"}, {"max_tokens", 2.0}, {"top_k", 1e1}, {"temperature", 0}});
  EXPECT_EQ(ok.status, 200) << ok.raw;
  EXPECT_EQ(ok.body["usage"]["completion_tokens"], 2);
}

TEST_F(ServerTest, ConcurrentRequestsAllSucceedWithSequentialResults) {
  const int n = 6;
  const auto request = [](int i) {
    return json{{"prompt", fmt::format("Request number {}:", i)},
                {"max_tokens", 10},
                {"temperature", 0},
                {"stream", i % 3 == 0}};
  };
  const auto text_of = [](const Reply& r, bool stream) {
    if (!stream) return r.body["choices"][0]["text"].get<std::string>();
    std::string text;
    for (const auto& ev : parse_sse(r.raw).events) text += ev["choices"][0]["text"].get<std::string>();
    return text;
  };
  std::vector<std::string> sequential(n), concurrent(n);
  std::vector<int> status(n);
  for (int i = 0; i < n; ++i) sequential[i] = text_of(post(port_, "/v1/completions", request(i)), i % 3 == 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      const Reply r = post(port_, "/v1/completions", request(i));
      status[size_t(i)] = r.status;
      concurrent[size_t(i)] = r.status == 200 ? text_of(r, i % 3 == 0) : r.raw;
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(status[size_t(i)], 200) << concurrent[size_t(i)];
    EXPECT_EQ(concurrent[size_t(i)], sequential[size_t(i)]) << "request " << i;
  }
}

// ---- servers with a hooked model ----

TEST(ServerDisconnect, ClientLeavingMidStreamStopsGenerationAndFreesTheSlot) {
  set_log_level(LogLevel::Warn);
  std::atomic<int> decodes{0};
  // 3 ms a token: 200 tokens would take 0.6 s; the stop should come within a few tokens of the close.
  LoadedModel model = loaded(std::make_unique<HookedModel>(tiny_model(),
                                                           [&] {
                                                             ++decodes;
                                                             std::this_thread::sleep_for(3ms);
                                                           }),
                             /*stop_ids=*/{});
  ServerOptions opt;
  opt.port = 0;
  Server server(model, opt);
  const int port = server.start();

  const int fd = connect_loopback(port);
  ASSERT_GE(fd, 0);
  const std::string body =
      json{{"prompt", "x"}, {"max_tokens", 200}, {"temperature", 0}, {"stream", true}}.dump();
  const std::string request =
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(::send(fd, request.data(), request.size(), 0), ssize_t(request.size()));
  std::string received;
  char buf[512];
  while (received.find("data: ") == std::string::npos) {  // headers and a first event
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    ASSERT_GT(n, 0) << "no event before the timeout";
    received.append(buf, size_t(n));
  }
  ::close(fd);
  const auto closed_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return server.running() == 0 && server.waiting() == 0; }));
  EXPECT_LT(std::chrono::steady_clock::now() - closed_at, 2s);
  EXPECT_LT(decodes.load(), 150) << "generation went on after the client left";

  // The server serves the next request.
  const auto r = post(port, "/v1/completions", json{{"prompt", "y"}, {"max_tokens", 3}, {"temperature", 0}});
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["usage"]["completion_tokens"], 3);
  server.stop();
}

TEST(ServerQueue, FullQueueAnswers503) {
  set_log_level(LogLevel::Warn);
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  LoadedModel model = loaded(std::make_unique<HookedModel>(tiny_model(), [&] {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return open; });
  }));
  ServerOptions opt;
  opt.port = 0;
  opt.max_queue = 1;
  Server server(model, opt);
  const int port = server.start();
  const json request = {{"prompt", "hold"}, {"max_tokens", 2}, {"temperature", 0}};

  Reply first, second;
  std::thread a([&] { first = post(port, "/v1/completions", request); });
  ASSERT_TRUE(eventually([&] { return server.running() == 1; }));
  std::thread b([&] { second = post(port, "/v1/completions", request); });
  ASSERT_TRUE(eventually([&] { return server.waiting() == 1; }));

  const Reply third = post(port, "/v1/completions", request);
  expect_error(third, 503, "queue_full");
  const Reply health = get(port, "/health");  // still answers while busy
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body["running"], 1);
  EXPECT_EQ(health.body["waiting"], 1);

  {
    std::lock_guard lock(m);
    open = true;
  }
  cv.notify_all();
  a.join();
  b.join();
  EXPECT_EQ(first.status, 200) << first.raw;
  EXPECT_EQ(second.status, 200) << second.raw;
  EXPECT_EQ(first.body["choices"][0]["text"], second.body["choices"][0]["text"]);
  EXPECT_EQ(server.running() + server.waiting(), 0);
  server.stop();
}

// Clients that connect and send nothing, or half a request head, and wait: as many as there are
// connection threads (twice as many here) must not keep /health or a generation waiting.
TEST(ServerSlowClients, HealthAnswersWhileIdleConnectionsAreOpen) {
  set_log_level(LogLevel::Warn);
  LoadedModel model = loaded(std::make_unique<Borrowed>(tiny_model()));
  ServerOptions opt;
  opt.port = 0;
  opt.http_threads = 4;
  opt.max_queue = 0;  // 4 request threads
  Server server(model, opt);
  const int port = server.start();
  std::vector<int> idle;
  for (int i = 0; i < 8; ++i) {
    const int fd = connect_loopback(port);
    ASSERT_GE(fd, 0);
    if (i % 2 == 1) {
      const std::string part = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n";  // no blank line: never ends
      ASSERT_EQ(::send(fd, part.data(), part.size(), MSG_NOSIGNAL), ssize_t(part.size()));
    }
    idle.push_back(fd);
  }
  std::this_thread::sleep_for(300ms);  // accepted and handed to the server's threads

  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(5, 0);
  c.set_read_timeout(5, 0);
  auto t0 = std::chrono::steady_clock::now();
  const Reply health = to_reply(c.Get("/health"));
  EXPECT_EQ(health.status, 200) << health.raw;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms);
  t0 = std::chrono::steady_clock::now();
  const Reply r =
      to_reply(c.Post("/v1/completions", json{{"prompt", "x"}, {"max_tokens", 2}, {"temperature", 0}}.dump(),
                      "application/json"));
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  t0 = std::chrono::steady_clock::now();
  server.stop();  // closes them rather than waiting for them
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  for (int fd : idle) ::close(fd);
}

// The request line and headers have header_timeout_s in all: a client trickling a byte at a time does
// not extend it (a read timeout would restart with every byte), and an idle connection is closed.
TEST(ServerSlowClients, RequestHeadsMustArriveWithinTheHeaderTimeout) {
  set_log_level(LogLevel::Warn);
  LoadedModel model = loaded(std::make_unique<Borrowed>(tiny_model()));
  ServerOptions opt;
  opt.port = 0;
  opt.header_timeout_s = 1;
  Server server(model, opt);
  const int port = server.start();
  const auto read_all = [](int fd) {
    std::string answer;
    char buf[1024];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) answer.append(buf, size_t(n));
    return answer;
  };

  const int trickle = connect_loopback(port);
  ASSERT_GE(trickle, 0);
  std::atomic<bool> done{false};
  std::thread sender([&] {  // 140 bytes, one each 50 ms: 7 s if nothing stopped it
    const std::string head = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + std::string(100, 'a');
    for (char ch : head) {
      if (done || ::send(trickle, &ch, 1, MSG_NOSIGNAL) != 1) break;
      std::this_thread::sleep_for(50ms);
    }
  });
  const int silent = connect_loopback(port);
  ASSERT_GE(silent, 0);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string answer = read_all(trickle);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  done = true;
  sender.join();
  EXPECT_EQ(answer.rfind("HTTP/1.1 408", 0), 0u) << answer;
  EXPECT_EQ(body_of(answer)["error"]["code"], "request_timeout") << answer;
  EXPECT_EQ(read_all(silent), "");  // closed without a word
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  ::close(trickle);
  ::close(silent);

  // A kept-alive connection gets the same time for its next request, then closes.
  const int kept = connect_loopback(port);
  ASSERT_GE(kept, 0);
  const std::string request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  ASSERT_EQ(::send(kept, request.data(), request.size(), MSG_NOSIGNAL), ssize_t(request.size()));
  const auto t1 = std::chrono::steady_clock::now();
  const std::string first = read_all(kept);
  EXPECT_EQ(first.rfind("HTTP/1.1 200", 0), 0u) << first;
  EXPECT_NE(first.find("\"status\":\"ok\""), std::string::npos) << first;
  EXPECT_LT(std::chrono::steady_clock::now() - t1, 3s);
  ::close(kept);

  // A request head longer than the limit (32 KiB) is refused.
  const std::string big = raw_exchange(
      port, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + std::string(33 << 10, 'a') + "\r\n\r\n");
  EXPECT_EQ(big.rfind("HTTP/1.1 431", 0), 0u) << big.substr(0, 300);
  EXPECT_EQ(get(port, "/health").status, 200);
  server.stop();
}

TEST(ServerOptionsCheck, BadOptionsAndUnknownTemplates) {
  LoadedModel model = loaded(std::make_unique<Borrowed>(tiny_model()));
  ServerOptions opt;
  opt.max_queue = -1;
  EXPECT_NE(test::error_of([&] { Server s(model, opt); }).find("max-queue"), std::string::npos);
  opt = {};
  opt.context = 100000;
  EXPECT_NE(test::error_of([&] { Server s(model, opt); }).find("--ctx"), std::string::npos);
  opt = {};
  opt.chat_format = "vicuna";
  EXPECT_NE(test::error_of([&] { Server s(model, opt); }).find("unknown chat format"), std::string::npos);
  model.chat_template = "{{ '[INST]' }}";
  opt = {};
  EXPECT_NE(test::error_of([&] { Server s(model, opt); }).find("--chat-format"), std::string::npos);
  opt.chat_format = "chatml";  // an explicit format overrides detection
  EXPECT_NO_THROW(Server(model, opt));
}

TEST(ServerLifecycle, StopsPromptlyAndTwice) {
  set_log_level(LogLevel::Warn);
  LoadedModel model = loaded(std::make_unique<Borrowed>(tiny_model()));
  ServerOptions opt;
  opt.port = 0;
  Server server(model, opt);
  const int port = server.start();
  EXPECT_EQ(server.port(), port);
  EXPECT_EQ(get(port, "/health").status, 200);
  server.stop();
  server.stop();
  EXPECT_EQ(get(port, "/health").status, 0);  // nobody listens
}

}  // namespace
}  // namespace tl
