#include "text/token_file.hpp"

#include <array>
#include <cstring>
#include <limits>

#include "core/error.hpp"
#include "core/file.hpp"

namespace tl {

namespace {

void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
uint32_t get_u32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | p[i];
  return v;
}
uint64_t get_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

uint32_t width_for(uint32_t vocab_size) {
  return vocab_size <= 65536u ? 2u : 4u;
}

uint64_t align8(uint64_t n) {
  return (n + 7) & ~uint64_t(7);
}

}  // namespace

nlohmann::json token_meta_to_json(const TokenFileMeta& m) {
  nlohmann::json j = m.extra.is_object() ? m.extra : nlohmann::json::object();
  auto put = [&](const char* key, const std::string& v) {
    if (!v.empty()) j[key] = v;
  };
  put("tokenizer", m.tokenizer);
  put("tokenizer_sha256", m.tokenizer_sha256);
  put("corpus", m.corpus);
  put("input", m.input);
  put("split", m.split);
  put("protocol", m.protocol);
  j["bos"] = m.bos;
  j["documents"] = m.documents;
  if (!m.doc_offsets.empty()) j["doc_offsets"] = m.doc_offsets;
  return j;
}

TokenFileMeta token_meta_from_json(const nlohmann::json& j, uint32_t vocab_size, std::string_view what) {
  TL_CHECK(j.is_object(), "{}: metadata is a JSON {}, expected an object", what, j.type_name());
  TokenFileMeta m;
  m.vocab_size = vocab_size;
  m.extra = nlohmann::json::object();
  for (const auto& item : j.items()) {
    // Plain references, not structured bindings: clang 14 cannot capture those in a lambda.
    const std::string& key = item.key();
    const nlohmann::json& v = item.value();
    auto str = [&](std::string& dst) {
      TL_CHECK(v.is_string(), "{}: metadata \"{}\" is a {}, expected a string", what, key, v.type_name());
      dst = v.get<std::string>();
    };
    if (key == "tokenizer") {
      str(m.tokenizer);
    } else if (key == "tokenizer_sha256") {
      str(m.tokenizer_sha256);
    } else if (key == "corpus") {
      str(m.corpus);
    } else if (key == "input") {
      str(m.input);
    } else if (key == "split") {
      str(m.split);
    } else if (key == "protocol") {
      str(m.protocol);
    } else if (key == "bos") {
      TL_CHECK(v.is_boolean(), "{}: metadata \"bos\" is a {}, expected true or false", what, v.type_name());
      m.bos = v.get<bool>();
    } else if (key == "documents") {
      TL_CHECK(v.is_number_unsigned(), "{}: metadata \"documents\" is {}, expected a count", what, v.dump());
      m.documents = v.get<uint64_t>();
    } else if (key == "doc_offsets") {
      TL_CHECK(v.is_array(), "{}: metadata \"doc_offsets\" is a {}, expected an array", what, v.type_name());
      m.doc_offsets.reserve(v.size());
      for (const auto& o : v) {
        TL_CHECK(o.is_number_unsigned(), "{}: metadata \"doc_offsets\" holds {}, expected token offsets",
                 what, o.dump());
        m.doc_offsets.push_back(o.get<uint64_t>());
      }
    } else {
      m.extra[key] = v;
    }
  }
  return m;
}

void write_token_file(const fs::path& path, std::span<const int32_t> tokens, const TokenFileMeta& meta) {
  TL_CHECK(meta.vocab_size > 0, "{}: vocab_size is 0, expected the tokenizer's vocabulary size",
           path.string());
  for (size_t i = 0; i < tokens.size(); ++i)
    TL_CHECK(tokens[i] >= 0 && uint32_t(tokens[i]) < meta.vocab_size,
             "{}: token {} is {}, expected 0 <= id < vocab_size {}", path.string(), i, tokens[i],
             meta.vocab_size);
  for (size_t i = 0; i < meta.doc_offsets.size(); ++i)
    TL_CHECK(
        meta.doc_offsets[i] <= tokens.size() && (i == 0 || meta.doc_offsets[i] >= meta.doc_offsets[i - 1]),
        "{}: doc_offsets[{}] = {}, expected non-decreasing offsets <= {} tokens", path.string(), i,
        meta.doc_offsets[i], tokens.size());
  const std::string json = token_meta_to_json(meta).dump();
  TL_CHECK(json.size() <= std::numeric_limits<uint32_t>::max(), "{}: metadata of {} bytes is too large",
           path.string(), json.size());
  const uint32_t width = width_for(meta.vocab_size);

  std::array<uint8_t, kTokenFileHeaderBytes> hdr{};
  std::memcpy(hdr.data(), kTokenFileMagic, 8);
  put_u32(hdr.data() + 8, kTokenFileVersion);
  put_u32(hdr.data() + 12, width);
  put_u64(hdr.data() + 16, tokens.size());
  put_u32(hdr.data() + 24, meta.vocab_size);
  put_u32(hdr.data() + 28, uint32_t(json.size()));

  AtomicFile f(path);
  f.write(hdr.data(), hdr.size());
  f.write(json);
  const uint64_t pad = align8(kTokenFileHeaderBytes + json.size()) - (kTokenFileHeaderBytes + json.size());
  const uint8_t zeros[8] = {};
  f.write(zeros, pad);
  // Little-endian by construction, in blocks so a large stream does not need a second full copy.
  std::vector<uint8_t> buf;
  constexpr size_t kBlock = 1 << 20;
  for (size_t i = 0; i < tokens.size(); i += kBlock) {
    const size_t n = std::min(kBlock, tokens.size() - i);
    buf.resize(n * width);
    for (size_t k = 0; k < n; ++k) {
      const uint32_t v = uint32_t(tokens[i + k]);
      for (uint32_t b = 0; b < width; ++b) buf[k * width + b] = uint8_t(v >> (8 * b));
    }
    f.write(buf.data(), buf.size());
  }
  f.commit();
}

namespace {

// Validates everything but the token values; returns the header and metadata.
TokenFileInfo parse_header(const MappedFile& mf) {
  const std::string name = mf.path().string();
  const uint8_t* p = mf.data();
  const uint64_t size = mf.size();
  TL_CHECK(size >= kTokenFileHeaderBytes,
           "{}: truncated token file: {} bytes, expected at least the {}-byte header", name, size,
           kTokenFileHeaderBytes);
  if (std::memcmp(p, kTokenFileMagic, 8) != 0) {
    std::string found;
    for (int i = 0; i < 8; ++i) found += fmt::format("{:02x}", p[i]);
    fail("{}: not a ternlab token file: bad magic {} (hex), expected \"TLTOK\\0\\0\\1\" (544c544f4b000001)",
         name, found);
  }
  TokenFileInfo info;
  info.version = get_u32(p + 8);
  TL_CHECK(info.version == kTokenFileVersion, "{}: token file version {}, expected {}", name, info.version,
           kTokenFileVersion);
  info.token_bytes = get_u32(p + 12);
  TL_CHECK(info.token_bytes == 2 || info.token_bytes == 4,
           "{}: token width {} bytes, expected 2 (u16) or 4 (u32)", name, info.token_bytes);
  info.count = get_u64(p + 16);
  const uint32_t vocab = get_u32(p + 24);
  TL_CHECK(vocab > 0, "{}: vocab_size is 0, expected a positive vocabulary size", name);
  TL_CHECK(info.token_bytes == 4 || vocab <= 65536u,
           "{}: vocab_size {} does not fit u16 tokens, expected <= 65536", name, vocab);
  const uint32_t meta_len = get_u32(p + 28);
  TL_CHECK(kTokenFileHeaderBytes + uint64_t(meta_len) <= size,
           "{}: truncated token file: metadata of {} bytes runs past the end of the file ({} bytes)", name,
           meta_len, size);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(p + kTokenFileHeaderBytes, p + kTokenFileHeaderBytes + meta_len);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: metadata is not valid JSON ({})", name, e.what());
  }
  info.meta = token_meta_from_json(j, vocab, name);
  info.data_offset = align8(kTokenFileHeaderBytes + uint64_t(meta_len));
  TL_CHECK(info.data_offset <= size, "{}: truncated token file: {} bytes, the header and metadata need {}",
           name, size, info.data_offset);
  for (uint64_t i = kTokenFileHeaderBytes + meta_len; i < info.data_offset; ++i)
    TL_CHECK(p[i] == 0, "{}: padding byte at offset {} is {}, expected 0", name, i, p[i]);
  const uint64_t have = size - info.data_offset;
  if (info.count > have / info.token_bytes) {
    const std::string need = info.count <= std::numeric_limits<uint64_t>::max() / info.token_bytes
                                 ? fmt::format("{} bytes", info.count * info.token_bytes)
                                 : std::string("more bytes than a file can hold");
    fail("{}: truncated token file: count {} needs {} of u{} tokens, but only {} bytes follow the header",
         name, info.count, need, info.token_bytes * 8, have);
  }
  TL_CHECK(info.count * info.token_bytes == have, "{}: {} unexpected bytes after the {} tokens", name,
           have - info.count * info.token_bytes, info.count);
  for (size_t i = 0; i < info.meta.doc_offsets.size(); ++i)
    TL_CHECK(info.meta.doc_offsets[i] <= info.count &&
                 (i == 0 || info.meta.doc_offsets[i] >= info.meta.doc_offsets[i - 1]),
             "{}: metadata doc_offsets[{}] = {}, expected non-decreasing offsets <= count {}", name, i,
             info.meta.doc_offsets[i], info.count);
  return info;
}

}  // namespace

TokenFileInfo read_token_file_info(const fs::path& path) {
  return parse_header(MappedFile(path));
}

TokenFile read_token_file(const fs::path& path) {
  const MappedFile mf(path);
  TokenFileInfo info = parse_header(mf);
  TokenFile tf;
  tf.meta = std::move(info.meta);
  tf.token_bytes = info.token_bytes;
  TL_CHECK(info.count <= std::numeric_limits<size_t>::max() / sizeof(int32_t),
           "{}: {} tokens do not fit in memory", path.string(), info.count);
  tf.tokens.resize(size_t(info.count));
  const uint8_t* d = mf.data() + info.data_offset;
  const uint32_t vocab = tf.meta.vocab_size;
  for (size_t i = 0; i < tf.tokens.size(); ++i) {
    const uint32_t v =
        info.token_bytes == 2 ? uint32_t(d[2 * i]) | uint32_t(d[2 * i + 1]) << 8 : get_u32(d + 4 * i);
    TL_CHECK(v < vocab, "{}: token {} is {}, expected < vocab_size {}", path.string(), i, v, vocab);
    tf.tokens[i] = int32_t(v);
  }
  return tf;
}

// ---------------------------------------------------------------------------------------------------
// SHA-256 (FIPS 180-4)

std::string sha256_hex(std::string_view data) {
  static constexpr uint32_t k[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
      0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
      0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
      0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
      0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
      0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  auto block = [&](const uint8_t* b) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t(b[4 * i]) << 24 | uint32_t(b[4 * i + 1]) << 16 | uint32_t(b[4 * i + 2]) << 8 |
             b[4 * i + 3];
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
      hh = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = bb;
      bb = a;
      a = t1 + t2;
    }
    h[0] += a;
    h[1] += bb;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
  };
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  const size_t n = data.size();
  size_t i = 0;
  for (; i + 64 <= n; i += 64) block(p + i);
  uint8_t tail[128] = {};
  const size_t rem = n - i;
  std::memcpy(tail, p + i, rem);
  tail[rem] = 0x80;
  const size_t tail_len = rem + 9 <= 64 ? 64 : 128;
  const uint64_t bits = uint64_t(n) * 8;
  for (int b = 0; b < 8; ++b) tail[tail_len - 1 - b] = uint8_t(bits >> (8 * b));
  block(tail);
  if (tail_len == 128) block(tail + 64);
  std::string out;
  for (uint32_t v : h) out += fmt::format("{:08x}", v);
  return out;
}

}  // namespace tl
