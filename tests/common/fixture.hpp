// Reader for golden fixture files (.tlfx) written by tools/golden/tlfx.py: magic "TLFX", version 1,
// entries of (name, dtype f32/i8/i32/text, dims, data). Test-only code.
#pragma once
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/file.hpp"

namespace tl::test {

struct FixtureEntry {
  uint8_t dtype = 0;  // 0 f32, 1 i8, 2 i32, 3 text
  std::vector<int64_t> dims;
  std::vector<float> f32;
  std::vector<int8_t> i8;
  std::vector<int32_t> i32;
  std::string text;
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : dims) n *= d;
    return n;
  }
};

inline std::map<std::string, FixtureEntry> read_fixture(const std::string& path) {
  const std::string bytes = read_file(path);
  size_t pos = 0;
  auto take = [&](void* dst, size_t n) {
    TL_CHECK(pos + n <= bytes.size(), "{}: truncated fixture at byte {}", path, pos);
    std::memcpy(dst, bytes.data() + pos, n);
    pos += n;
  };
  char magic[4];
  take(magic, 4);
  TL_CHECK(std::memcmp(magic, "TLFX", 4) == 0, "{}: not a TLFX fixture", path);
  uint32_t version = 0, count = 0;
  take(&version, 4);
  take(&count, 4);
  TL_CHECK(version == 1, "{}: fixture version {} (expected 1)", path, version);
  std::map<std::string, FixtureEntry> out;
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t len = 0;
    take(&len, 4);
    std::string name(len, '\0');
    take(name.data(), len);
    FixtureEntry e;
    uint32_t ndim = 0;
    take(&e.dtype, 1);
    take(&ndim, 4);
    TL_CHECK(ndim <= 8, "{}: entry {} has {} dims", path, name, ndim);
    e.dims.resize(ndim);
    for (auto& d : e.dims) take(&d, 8);
    const auto n = size_t(e.numel());
    switch (e.dtype) {
      case 0:
        e.f32.resize(n);
        take(e.f32.data(), n * 4);
        break;
      case 1:
        e.i8.resize(n);
        take(e.i8.data(), n);
        break;
      case 2:
        e.i32.resize(n);
        take(e.i32.data(), n * 4);
        break;
      case 3:
        e.text.resize(n);
        take(e.text.data(), n);
        break;
      default:
        fail("{}: entry {} has unknown dtype {}", path, name, e.dtype);
    }
    out.emplace(std::move(name), std::move(e));
  }
  return out;
}

}  // namespace tl::test
