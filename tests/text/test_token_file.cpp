// Token files: round trips (u16 and u32), the exact byte layout, and malformed files rejected with
// messages that name the file and what was expected / found.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>
#include "../common/test_util.hpp"

#include <cstring>
#include <fstream>

#include "core/error.hpp"
#include "core/file.hpp"
#include "text/token_file.hpp"

namespace tl {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

using test::error_of;

class TokenFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tl_test_tokfile_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path path(const std::string& name) const { return dir_ / name; }
  static std::string bytes_of(const fs::path& p) { return read_file(p); }
  static void put(const fs::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary) << bytes;
  }
  static void put_u32(std::string& b, size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) b[at + i] = char(v >> (8 * i));
  }
  static void put_u64(std::string& b, size_t at, uint64_t v) {
    for (int i = 0; i < 8; ++i) b[at + i] = char(v >> (8 * i));
  }
  static uint32_t get_u32(const std::string& b, size_t at) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = v << 8 | uint8_t(b[at + i]);
    return v;
  }

  // A valid u16 file with tokens {1, 2, 3, 0x1234, 5} and vocab 50000.
  fs::path good_u16(const std::string& name) {
    TokenFileMeta m;
    m.vocab_size = 50000;
    m.corpus = "brown";
    const std::vector<int32_t> toks = {1, 2, 3, 0x1234, 5};
    const fs::path p = path(name);
    write_token_file(p, toks, m);
    return p;
  }

  fs::path dir_;
};

TEST_F(TokenFileTest, RoundTripU16WithMetadata) {
  TokenFileMeta m;
  m.vocab_size = 50000;
  m.tokenizer = "tok/tokenizer.json";
  m.tokenizer_sha256 = sha256_hex("tokenizer bytes");
  m.corpus = "wikitext";
  m.input = "/data/wiki.valid.raw";
  m.split = "validation";
  m.protocol = "seed";
  m.bos = false;
  m.documents = 3;
  m.doc_offsets = {0, 2, 4};
  m.extra["rows"] = 3760;
  m.extra["note"] = "caf\u00e9";
  const std::vector<int32_t> toks = {0, 1, 49999, 0x1234, 65535 % 50000, 7};
  write_token_file(path("a.tok"), toks, m);
  const TokenFile tf = read_token_file(path("a.tok"));
  EXPECT_EQ(tf.tokens, toks);
  EXPECT_EQ(tf.token_bytes, 2u);
  EXPECT_EQ(tf.meta.vocab_size, 50000u);
  EXPECT_EQ(tf.meta.tokenizer, m.tokenizer);
  EXPECT_EQ(tf.meta.tokenizer_sha256, m.tokenizer_sha256);
  EXPECT_EQ(tf.meta.corpus, "wikitext");
  EXPECT_EQ(tf.meta.input, m.input);
  EXPECT_EQ(tf.meta.split, "validation");
  EXPECT_EQ(tf.meta.protocol, "seed");
  EXPECT_FALSE(tf.meta.bos);
  EXPECT_EQ(tf.meta.documents, 3u);
  EXPECT_EQ(tf.meta.doc_offsets, m.doc_offsets);
  EXPECT_EQ(tf.meta.extra.at("rows"), 3760);
  EXPECT_EQ(tf.meta.extra.at("note"), "caf\u00e9");

  const TokenFileInfo info = read_token_file_info(path("a.tok"));
  EXPECT_EQ(info.count, toks.size());
  EXPECT_EQ(info.version, 1u);
  EXPECT_EQ(info.data_offset % 8, 0u);
  // Nothing but the file itself in the directory: the temporary name was renamed into place.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(TokenFileTest, RoundTripU32) {
  TokenFileMeta m;
  m.vocab_size = 128256;
  m.bos = true;
  const std::vector<int32_t> toks = {128000, 0, 70000, 128255, 65536, 65535};
  write_token_file(path("b.tok"), toks, m);
  const TokenFile tf = read_token_file(path("b.tok"));
  EXPECT_EQ(tf.tokens, toks);
  EXPECT_EQ(tf.token_bytes, 4u);
  EXPECT_TRUE(tf.meta.bos);
  EXPECT_TRUE(tf.meta.doc_offsets.empty());
}

TEST_F(TokenFileTest, WidthFollowsVocabSize) {
  TokenFileMeta m;
  m.vocab_size = 65536;
  write_token_file(path("c.tok"), std::vector<int32_t>{65535}, m);
  EXPECT_EQ(read_token_file(path("c.tok")).token_bytes, 2u);
  m.vocab_size = 65537;
  write_token_file(path("d.tok"), std::vector<int32_t>{65536}, m);
  const TokenFile tf = read_token_file(path("d.tok"));
  EXPECT_EQ(tf.token_bytes, 4u);
  EXPECT_EQ(tf.tokens, std::vector<int32_t>{65536});
  // Empty streams are valid.
  write_token_file(path("e.tok"), std::vector<int32_t>{}, m);
  EXPECT_TRUE(read_token_file(path("e.tok")).tokens.empty());
}

TEST_F(TokenFileTest, ExactByteLayoutLittleEndian) {
  const fs::path p = good_u16("layout.tok");
  const std::string b = bytes_of(p);
  EXPECT_EQ(b.substr(0, 8), std::string("TLTOK\0\0\1", 8));
  EXPECT_EQ(get_u32(b, 8), 1u);   // version
  EXPECT_EQ(get_u32(b, 12), 2u);  // u16
  EXPECT_EQ(uint8_t(b[16]), 5u);  // count, u64 LE
  EXPECT_EQ(get_u32(b, 20), 0u);
  EXPECT_EQ(get_u32(b, 24), 50000u);  // vocab
  const uint32_t meta_len = get_u32(b, 28);
  const auto meta = nlohmann::json::parse(b.substr(32, meta_len));
  EXPECT_EQ(meta.at("corpus"), "brown");
  const size_t data = (32 + meta_len + 7) / 8 * 8;
  ASSERT_EQ(b.size(), data + 5 * 2);
  EXPECT_EQ(uint8_t(b[data + 6]), 0x34);  // 0x1234 little-endian
  EXPECT_EQ(uint8_t(b[data + 7]), 0x12);
}

TEST_F(TokenFileTest, WriterRejectsBadInput) {
  TokenFileMeta m;
  m.vocab_size = 100;
  EXPECT_THAT(error_of([&] {
                write_token_file(path("x.tok"), std::vector<int32_t>{1, 100}, m);
              }),
              AllOf(HasSubstr("x.tok"), HasSubstr("token 1 is 100"), HasSubstr("vocab_size 100")));
  EXPECT_THAT(error_of([&] { write_token_file(path("x.tok"), std::vector<int32_t>{-1}, m); }),
              HasSubstr("token 0 is -1"));
  m.doc_offsets = {0, 5};
  EXPECT_THAT(error_of([&] {
                write_token_file(path("x.tok"), std::vector<int32_t>{1, 2}, m);
              }),
              HasSubstr("doc_offsets[1] = 5"));
  m.vocab_size = 0;
  m.doc_offsets.clear();
  EXPECT_THAT(error_of([&] { write_token_file(path("x.tok"), std::vector<int32_t>{}, m); }),
              HasSubstr("vocab_size is 0"));
  EXPECT_FALSE(fs::exists(path("x.tok")));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 0);
}

// ---------------------------------------------------------------------------------------------------
// Malformed files

TEST_F(TokenFileTest, BadMagic) {
  std::string b = bytes_of(good_u16("m.tok"));
  b[0] = 'X';
  put(path("m.tok"), b);
  EXPECT_THAT(error_of([&] { read_token_file(path("m.tok")); }),
              AllOf(HasSubstr("m.tok"), HasSubstr("not a ternlab token file"),
                    HasSubstr("bad magic 584c544f4b000001"), HasSubstr("expected")));
  put(path("text.tok"), "hello, this is a text file and not tokens at all\n");
  EXPECT_THAT(error_of([&] { read_token_file(path("text.tok")); }), HasSubstr("bad magic"));
}

TEST_F(TokenFileTest, TruncatedHeader) {
  const std::string b = bytes_of(good_u16("t.tok"));
  put(path("t.tok"), b.substr(0, 20));
  EXPECT_THAT(
      error_of([&] { read_token_file(path("t.tok")); }),
      AllOf(HasSubstr("t.tok"), HasSubstr("truncated"), HasSubstr("20 bytes"), HasSubstr("32-byte header")));
  put(path("empty.tok"), "");
  EXPECT_THAT(error_of([&] { read_token_file(path("empty.tok")); }), HasSubstr("0 bytes"));
  // Metadata length running past the end.
  put(path("t.tok"), b.substr(0, 40));
  EXPECT_THAT(error_of([&] { read_token_file(path("t.tok")); }),
              AllOf(HasSubstr("metadata of"), HasSubstr("runs past the end of the file (40 bytes)")));
}

TEST_F(TokenFileTest, TruncatedTokens) {
  const std::string b = bytes_of(good_u16("tt.tok"));
  put(path("tt.tok"), b.substr(0, b.size() - 3));
  EXPECT_THAT(error_of([&] { read_token_file(path("tt.tok")); }),
              AllOf(HasSubstr("tt.tok"), HasSubstr("truncated"),
                    HasSubstr("count 5 needs 10 bytes of u16 tokens"), HasSubstr("only 7 bytes")));
}

TEST_F(TokenFileTest, CountBeyondFileSize) {
  std::string b = bytes_of(good_u16("c.tok"));
  put_u64(b, 16, uint64_t(1) << 40);
  put(path("c.tok"), b);
  EXPECT_THAT(error_of([&] { read_token_file(path("c.tok")); }),
              AllOf(HasSubstr("count 1099511627776 needs 2199023255552 bytes"), HasSubstr("only 10 bytes")));
  put_u64(b, 16, ~uint64_t(0));
  put(path("c.tok"), b);
  EXPECT_THAT(error_of([&] { read_token_file_info(path("c.tok")); }),
              AllOf(HasSubstr("count 18446744073709551615"), HasSubstr("more bytes than a file can hold")));
}

TEST_F(TokenFileTest, TrailingBytes) {
  put(path("tr.tok"), bytes_of(good_u16("tr.tok")) + std::string("\0\0\0", 3));
  EXPECT_THAT(error_of([&] { read_token_file(path("tr.tok")); }),
              AllOf(HasSubstr("tr.tok"), HasSubstr("3 unexpected bytes after the 5 tokens")));
}

TEST_F(TokenFileTest, TokenIdAtOrAboveVocab) {
  std::string b = bytes_of(good_u16("v.tok"));
  const size_t data = b.size() - 10;
  b[data + 4] = char(0x50);  // token 2 := 0xC350 = 50000 == vocab_size
  b[data + 5] = char(0xC3);
  put(path("v.tok"), b);
  EXPECT_THAT(
      error_of([&] { read_token_file(path("v.tok")); }),
      AllOf(HasSubstr("v.tok"), HasSubstr("token 2 is 50000"), HasSubstr("expected < vocab_size 50000")));
  // The header-only reader does not look at the tokens.
  EXPECT_EQ(read_token_file_info(path("v.tok")).count, 5u);
}

TEST_F(TokenFileTest, BadVersionWidthVocabMetadataPadding) {
  const std::string good = bytes_of(good_u16("h.tok"));
  auto expect_error = [&](std::string b, const std::string& what) {
    put(path("h.tok"), b);
    EXPECT_THAT(error_of([&] { read_token_file(path("h.tok")); }),
                AllOf(HasSubstr("h.tok"), HasSubstr(what)));
  };
  std::string b = good;
  put_u32(b, 8, 2);
  expect_error(b, "token file version 2, expected 1");
  b = good;
  put_u32(b, 12, 3);
  expect_error(b, "token width 3 bytes, expected 2 (u16) or 4 (u32)");
  b = good;
  put_u32(b, 24, 70000);
  expect_error(b, "vocab_size 70000 does not fit u16 tokens");
  b = good;
  put_u32(b, 24, 0);
  expect_error(b, "vocab_size is 0");
  b = good;
  b[32] = '[';
  expect_error(b, "metadata is not valid JSON");
  b = good;
  const size_t pos = b.find("\"bos\":false");
  ASSERT_NE(pos, std::string::npos);
  b.replace(pos, 11, "\"bos\":12345");
  expect_error(b, "metadata \"bos\" is a number, expected true or false");
  // Non-zero padding between the metadata and the tokens.
  b = good;
  const uint32_t meta_len = get_u32(b, 28);
  const size_t data = (32 + meta_len + 7) / 8 * 8;
  if (data > 32 + meta_len) {
    b[32 + meta_len] = 'x';
    expect_error(b, "padding byte");
  }
}

TEST_F(TokenFileTest, MissingFile) {
  EXPECT_THAT(error_of([&] { read_token_file(path("nope.tok")); }),
              AllOf(HasSubstr("nope.tok"), HasSubstr("cannot open")));
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // Padding boundaries, against Python's hashlib on bytes (i*7+3) % 256.
  const std::pair<size_t, const char*> cases[] = {
      {55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b"},
      {56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27"},
      {63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055"},
      {64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241"},
      {65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e"},
      {119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e"},
      {120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5"},
      {128, "d2742f1f4ac6bb7ca2b239ee18402ba8b3f9f8e652d2a72973c2b9ba11c08cf6"},
  };
  for (const auto& [n, hex] : cases) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; ++i) s[i] = char((i * 7 + 3) % 256);
    EXPECT_EQ(sha256_hex(s), hex) << n;
  }
}

}  // namespace
}  // namespace tl
