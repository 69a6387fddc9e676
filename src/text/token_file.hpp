// Token files: a prepared token stream with the facts needed to trust it (tokenizer hash, corpus, split,
// protocol). Layout, all little-endian (docs/data.md):
//
//   offset  size  field
//        0     8  magic "TLTOK\0\0\1"
//        8     4  u32 version (1)
//       12     4  u32 token width in bytes: 2 (u16, vocab_size <= 65536) or 4 (u32)
//       16     8  u64 count (tokens)
//       24     4  u32 vocab_size (every token id is < vocab_size)
//       28     4  u32 metadata length M
//       32     M  metadata: a JSON object, UTF-8
//   32 + M     P  zero bytes up to the next multiple of 8 (so the tokens are aligned)
//   32 + M + P    count tokens
//
// The file ends right after the last token. Readers reject anything else with a tl::Error that names the
// file and what was expected and found.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

namespace fs = std::filesystem;

inline constexpr char kTokenFileMagic[8] = {'T', 'L', 'T', 'O', 'K', '\0', '\0', '\1'};
inline constexpr uint32_t kTokenFileVersion = 1;
inline constexpr size_t kTokenFileHeaderBytes = 32;

struct TokenFileMeta {
  uint32_t vocab_size = 0;  // in the binary header, not the JSON
  // JSON keys of the same names; empty strings are left out.
  std::string tokenizer;         // name or path of the tokenizer
  std::string tokenizer_sha256;  // of the tokenizer.json bytes
  std::string corpus;            // brown | wikitext | text | jsonl | ...
  std::string input;             // what was read
  std::string split;             // train | validation | test | all
  std::string protocol;          // seed | plain | raw
  bool bos = false;
  uint64_t documents = 0;
  std::vector<uint64_t> doc_offsets;                // optional: token index where each document begins
  nlohmann::json extra = nlohmann::json::object();  // any other keys, kept on a round trip
};

struct TokenFile {
  std::vector<int32_t> tokens;
  TokenFileMeta meta;
  uint32_t token_bytes = 0;  // 2 or 4, as stored
};

// The header and metadata only (the tokens are not read; sizes are still checked against the file).
struct TokenFileInfo {
  TokenFileMeta meta;
  uint32_t version = 0;
  uint32_t token_bytes = 0;
  uint64_t count = 0;
  uint64_t data_offset = 0;
};

nlohmann::json token_meta_to_json(const TokenFileMeta& m);
// Throws tl::Error naming `what` and the key on a wrong type.
TokenFileMeta token_meta_from_json(const nlohmann::json& j, uint32_t vocab_size, std::string_view what);

// Writes atomically (temporary name + rename). Throws if meta.vocab_size is 0 or a token is outside
// [0, vocab_size).
void write_token_file(const fs::path& path, std::span<const int32_t> tokens, const TokenFileMeta& meta);
// Memory-maps and validates: magic, version, width, metadata, exact size, every id < vocab_size.
TokenFile read_token_file(const fs::path& path);
TokenFileInfo read_token_file_info(const fs::path& path);

// SHA-256 of bytes, lowercase hex (as sha256sum prints it).
std::string sha256_hex(std::string_view data);

}  // namespace tl
