// Small helpers shared by the test suites.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/rng.hpp"

namespace tl::test {

// Runs f, expects a tl::Error, returns its message (and records a failure if none was thrown).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected tl::Error";
  return {};
}

// n token ids uniform in [0, vocab), seeded.
inline std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng.below(uint64_t(vocab)));
  return t;
}

struct CommandResult {
  int code = -1;    // exit status; -1 if the command could not run or was killed
  std::string out;  // stdout and stderr together
};

// A fresh directory under the system's temporary folder, removed with everything in it at the end of scope.
// Unnamed ones are numbered, so several can live in one test.
class TempDir {
 public:
  TempDir() : TempDir(std::to_string(next_number()).append("_d")) {}
  explicit TempDir(const std::string& name, const std::string& prefix = "tl_test_")
      : path_(std::filesystem::temp_directory_path() / (prefix + std::to_string(::getpid()) + "_" + name)) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  // Writes `contents` to path()/name, bytes as given.
  std::filesystem::path write(const std::string& name, const std::string& contents) const {
    const std::filesystem::path p = path_ / name;
    std::ofstream(p, std::ios::binary) << contents;
    return p;
  }
  // How many files and folders lie directly in the directory.
  size_t entries() const {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(path_)) ++n;
    return n;
  }

 private:
  static int next_number() {
    static std::atomic<int> counter{0};
    return counter++;
  }
  std::filesystem::path path_;
};

// Runs a shell command line and captures its output and exit status.
inline CommandResult run_command(const std::string& command_line) {
  CommandResult r;
  FILE* p = popen((command_line + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace tl::test
