// Helpers for the safetensors, config and checkpoint tests: temporary directories, raw safetensors images,
// file patching.
#pragma once
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "formats/safetensors.hpp"

namespace tl::testing {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("ternlab-io-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

// The message of the tl::Error that f throws (a test failure if it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const tl::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a tl::Error, none was thrown";
  return "";
}

// A safetensors image from a header text and `data_bytes` bytes of data (0, 1, 2, ...).
inline std::vector<uint8_t> raw_safetensors(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out(8 + header.size() + data_bytes);
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  for (size_t i = 0; i < data_bytes; ++i) out[8 + header.size() + i] = uint8_t(i);
  return out;
}

inline void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

inline void write_text(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << s;
}

// Overwrites bytes of a file in place.
inline void patch_file(const fs::path& p, uint64_t offset, const void* data, size_t n) {
  std::fstream f(p, std::ios::binary | std::ios::in | std::ios::out);
  f.seekp(std::streamoff(offset));
  f.write(static_cast<const char*>(data), std::streamsize(n));
}

// File offset of a tensor's first byte: 8 + header length + data_offsets begin.
inline uint64_t tensor_file_offset(const fs::path& file, const std::string& name) {
  SafetensorsFile f(file);
  const TensorInfo* t = f.find(name);
  EXPECT_NE(t, nullptr) << name;
  std::ifstream in(file, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  return 8 + n + (t ? t->begin : 0);
}

// A tensor with its own bytes, for rewriting files.
struct OwnedTensor {
  TensorSpec spec;
  std::vector<uint8_t> data;
};

inline std::vector<OwnedTensor> read_all(const fs::path& file) {
  SafetensorsFile f(file);
  std::vector<OwnedTensor> out;
  for (const auto& t : f.tensors()) {
    const auto b = f.bytes(t);
    out.push_back({{t.name, t.dtype, t.shape}, {b.begin(), b.end()}});
  }
  return out;
}

inline void write_all(const fs::path& file, const std::vector<OwnedTensor>& ts) {
  std::vector<TensorBlob> blobs;
  for (const auto& t : ts) blobs.push_back({t.spec, t.data});
  write_safetensors(file, blobs);
}

// Reads, edits and rewrites a safetensors file.
inline void rewrite(const fs::path& file, const std::function<void(std::vector<OwnedTensor>&)>& edit) {
  auto ts = read_all(file);
  edit(ts);
  write_all(file, ts);
}

}  // namespace tl::testing
