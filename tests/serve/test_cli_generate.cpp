// The generate, chat and serve commands, run as the ternlab binary on a tiny checkpoint from `ternlab init`.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <string>

#include "../common/test_util.hpp"
#include "core/log.hpp"
#include "infer/loader.hpp"
#include "infer/text_generation.hpp"

namespace tl {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::run_command;

const std::string kBinary = TERNLAB_BINARY;

class CliGenerate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    set_log_level(LogLevel::Warn);
    dir_ = new fs::path(fs::temp_directory_path() / ("ternlab-cli-generate-" + std::to_string(::getpid())));
    fs::remove_all(*dir_);
    const auto r = run_command(kBinary + " init --preset tiny --seed 1 -o " + dir_->string());
    ASSERT_EQ(r.code, 0) << r.out;
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  // The command's stdout only (stderr dropped), and its exit status.
  static test::CommandResult stdout_of(const std::string& args) {
    return run_command("(" + kBinary + " " + args + " 2>/dev/null)");
  }
  static std::string model() { return dir_->string(); }
  static fs::path* dir_;
};
fs::path* CliGenerate::dir_ = nullptr;

TEST_F(CliGenerate, GreedyJsonMatchesTheLibraryAndStreamingPrintsTheSameText) {
  const auto r =
      stdout_of("generate " + model() + " -p 'Hello there' -n 12 --temp 0 --backend reference --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const json j = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;

  LoadOptions load;
  load.backend = "reference";
  const LoadedModel m = load_language_model(model(), load);
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = 12;
  p.stop_ids = m.stop_ids;
  const auto want = generate_text(*m.lm, m.tokenizer, m.tokenizer.encode("Hello there", true), p);
  EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), want.tokens);
  EXPECT_EQ(j["text"], want.text);
  EXPECT_EQ(j["finish_reason"], want.finish_reason);
  EXPECT_EQ(j["prompt_tokens"], 12);  // bos + 11 bytes

  const auto streamed =
      stdout_of("generate " + model() + " -p 'Hello there' -n 12 --temp 0 --backend reference");
  ASSERT_EQ(streamed.code, 0);
  EXPECT_EQ(streamed.out, want.text);
  const auto with_stats = run_command(kBinary + " generate " + model() + " -p 'Hi' -n 4 --backend reference");
  EXPECT_NE(with_stats.out.find("tok/s"), std::string::npos) << with_stats.out;
}

TEST_F(CliGenerate, SameSeedSameText) {
  const std::string args =
      "generate " + model() + " -p 'Once' -n 20 --temp 1 --top-k 0 --top-p 1 --min-p 0 --json";
  const auto a = stdout_of(args + " --seed 7");
  const auto b = stdout_of(args + " --seed 7");
  const auto c = stdout_of(args + " --seed 8");
  ASSERT_EQ(a.code, 0) << a.out;
  const auto tokens = [](const test::CommandResult& r) { return json::parse(r.out)["tokens"]; };
  EXPECT_EQ(tokens(a), tokens(b));
  EXPECT_NE(tokens(a), tokens(c));
}

TEST_F(CliGenerate, BadFlagsAreClearErrors) {
  auto r = run_command(kBinary + " generate " + model() + " -p x --temp -1");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("temperature"), std::string::npos) << r.out;
  r = run_command(kBinary + " generate " + model() + " -p x --top-p 0");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("top_p"), std::string::npos) << r.out;
  r = run_command(kBinary + " generate " + model() + " -p x --backend fast");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("backend"), std::string::npos) << r.out;
  r = run_command(kBinary + " generate " + model() + "/missing -p x");
  EXPECT_NE(r.code, 0);
  r = run_command(kBinary + " chat " + model() + " --chat-format vicuna -m hi");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("unknown chat format 'vicuna'"), std::string::npos) << r.out;
}

TEST_F(CliGenerate, ChatTakesMessagesFromFlagsOrStdin) {
  auto r = stdout_of("chat " + model() + " --system 'Be brief.' -m 'Hello' -m 'And again?' -n 6 --temp 0");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(r.out.empty());
  r = run_command("printf 'hello\\n\\nbye\\n' | " + kBinary + " chat " + model() +
                  " -n 4 --temp 0 --chat-format chatml");
  EXPECT_EQ(r.code, 0) << r.out;
  r = run_command("printf '' | " + kBinary + " chat " + model() + " -n 4");  // EOF at once ends the chat
  EXPECT_EQ(r.code, 0) << r.out;
}

TEST_F(CliGenerate, ServeAnswersAndStopsOnSigterm) {
  int out_pipe[2];
  ASSERT_EQ(::pipe(out_pipe), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(out_pipe[1], STDOUT_FILENO);
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    ::execl(kBinary.c_str(), kBinary.c_str(), "-q", "serve", model().c_str(), "--port", "0", "--backend",
            "reference", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  FILE* out = ::fdopen(out_pipe[0], "r");
  char line[1024] = {};
  const bool got_line = std::fgets(line, sizeof line, out) != nullptr;
  const std::string banner = line;
  int port = 0;
  if (const size_t at = banner.rfind(':'); got_line && at != std::string::npos)
    port = std::atoi(banner.c_str() + at + 1);
  EXPECT_GT(port, 0) << banner;
  if (port > 0) {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(30, 0);
    const auto health = c.Get("/health");
    ASSERT_TRUE(health);
    EXPECT_EQ(health->status, 200);
    const auto done = c.Post("/v1/completions", R"({"prompt": "Hi", "max_tokens": 3, "temperature": 0})",
                             "application/json");
    ASSERT_TRUE(done);
    EXPECT_EQ(done->status, 200) << done->body;
    EXPECT_EQ(json::parse(done->body)["model"], dir_->filename().string());
  }
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::fclose(out);
  EXPECT_TRUE(WIFEXITED(status)) << "killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace tl
