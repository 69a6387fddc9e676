#include "text/bpe_train.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <exception>
#include <limits>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "core/enum_names.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "text/tokenizer.hpp"
#include "text/tokenizer_json.hpp"
#include "text/unicode.hpp"

namespace tl {

namespace {

using json = nlohmann::json;

// The LLaMA-3 pre-tokenizer and decoder sections, taken from Tokenizer::byte_level so the regex lives in
// one place (text/tokenizer.cpp).
const json& llama3_sections() {
  static const json doc = json::parse(Tokenizer::byte_level(258).to_json());
  return doc;
}

void check_options(const BpeTrainOptions& opt) {
  const auto& sp = opt.special_tokens;
  std::unordered_set<std::string> seen;
  const auto& byte_ids = bpe_byte_ids();
  for (const std::string& s : sp) {
    TL_CHECK(!s.empty(), "tokenizer train: a special token is empty");
    TL_CHECK(utf8_invalid_at(s) == std::string::npos, "tokenizer train: special token {} is not valid UTF-8",
             json(s).dump(-1, ' ', false, json::error_handler_t::replace));
    TL_CHECK(seen.insert(s).second, "tokenizer train: special token {} is given twice", json(s).dump());
    // The vocabulary is written in byte-unicode form, so a special token spelled like a byte token collides.
    if (const auto raw = unicode_to_bytes(s); raw && raw->size() == 1)
      fail(
          "tokenizer train: special token {} is spelled like the token of byte 0x{:02X} (id {}); choose "
          "another name",
          json(s).dump(), uint8_t((*raw)[0]), byte_ids[uint8_t((*raw)[0])]);
  }
  const int64_t min_vocab = 256 + int64_t(sp.size());
  TL_CHECK(opt.vocab_size >= min_vocab,
           "tokenizer train: vocab size {} is too small: the 256 byte tokens and {} special token(s) need at "
           "least {}",
           opt.vocab_size, sp.size(), min_vocab);
  TL_CHECK(opt.vocab_size <= int64_t(std::numeric_limits<int32_t>::max()),
           "tokenizer train: vocab size {} is too large (at most {})", opt.vocab_size,
           std::numeric_limits<int32_t>::max());
}

// tokenizer.json for the given BPE vocabulary (raw bytes by id), merges and special tokens.
json make_doc(const std::vector<std::string>& tokens, const std::vector<std::pair<int32_t, int32_t>>& merges,
              const std::vector<std::string>& specials) {
  json vocab = json::object();
  for (size_t id = 0; id < tokens.size(); ++id) vocab[bytes_to_unicode(tokens[id])] = id;
  json jm = json::array();
  for (const auto& [a, b] : merges)
    jm.push_back(bytes_to_unicode(tokens[size_t(a)]) + " " + bytes_to_unicode(tokens[size_t(b)]));
  json added = json::array();
  for (size_t k = 0; k < specials.size(); ++k)
    added.push_back(added_token_json(int64_t(tokens.size() + k), specials[k]));
  // LLaMA 3's template: BOS before each sequence
  const json post = specials.empty() ? json(nullptr) : bos_template_json(specials[0], int64_t(tokens.size()));
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", llama3_sections().at("pre_tokenizer")},
          {"post_processor", post},
          {"decoder", llama3_sections().at("decoder")},
          // ignore_merges stays false (LLaMA 3 sets it): then encoding applies the merges exactly as
          // training did, even to a word that is itself a token but was segmented differently.
          {"model", bpe_model_json(vocab, jm, false)}};
}

std::vector<std::string> byte_tokens() {
  std::vector<std::string> t(256);
  for (int id = 0; id < 256; ++id) t[size_t(id)] = std::string(1, char(bpe_id_bytes()[size_t(id)]));
  return t;
}

template <class Name>
std::vector<std::pair<std::string, uint64_t>> count_impl(size_t n, const std::string* const* texts,
                                                         std::span<const std::string> specials, Name&& name) {
  // A tokenizer with no merges but the same pre-tokenizer and added tokens as the one we will write.
  std::vector<std::string> sp(specials.begin(), specials.end());
  const Tokenizer pre = Tokenizer::from_json(make_doc(byte_tokens(), {}, sp).dump(), "bpe pre-tokenizer");
  const std::unordered_set<std::string> special_set(sp.begin(), sp.end());
  for (size_t i = 0; i < n; ++i)
    if (const size_t at = utf8_invalid_at(*texts[i]); at != std::string::npos)
      fail("tokenizer train: {}: invalid UTF-8 at byte {}", name(i), at);
  // Documents are counted on all threads, each into its own table; the sort below makes the result
  // independent of the order in which the tables are combined.
  std::unordered_map<std::string, uint64_t> counts;
  std::exception_ptr error;
#pragma omp parallel if (n > 1)
  {
    std::unordered_map<std::string, uint64_t> local;
    try {
#pragma omp for schedule(dynamic, 1) nowait
      for (size_t i = 0; i < n; ++i)
        // A piece equal to a special token is that token: a plain segment cannot hold a whole added
        // token, since the added-token scan tries every position.
        for (std::string& piece : pre.pre_tokenize(*texts[i]))
          if (!special_set.count(piece)) ++local[std::move(piece)];
    } catch (...) {  // exceptions must not leave an OpenMP region
#pragma omp critical(bpe_count_error)
      if (!error) error = std::current_exception();
    }
#pragma omp critical(bpe_count_merge)
    {
      if (counts.empty()) {
        counts = std::move(local);
      } else {
        for (auto& [w, c] : local) counts[w] += c;
      }
    }
  }
  if (error) std::rethrow_exception(error);
  std::vector<std::pair<std::string, uint64_t>> out(counts.begin(), counts.end());
  std::sort(out.begin(), out.end());
  return out;
}

// Heap entry: the highest count first, then the smallest (left, right) pair (HF's BpeTrainer order).
struct Candidate {
  uint64_t count;
  int32_t left, right;
};
struct CandidateLess {
  bool operator()(const Candidate& x, const Candidate& y) const {
    if (x.count != y.count) return x.count < y.count;
    return std::pair(x.left, x.right) > std::pair(y.left, y.right);
  }
};

struct PairStat {
  int32_t left, right;
  int64_t count = 0;            // occurrences, weighted by word counts
  std::vector<uint32_t> where;  // words where the pair was created (it may have gone since)
  uint32_t pushed_at = ~0u;     // the merge step that last queued it
  bool banned = false;          // its concatenation was already a token
};

uint64_t pair_key(int32_t a, int32_t b) {
  return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
}

}  // namespace

std::string_view bpe_stop_name(BpeStop s) {
  static constexpr std::array<EnumName<BpeStop>, 3> kStops{{{BpeStop::VocabSize, "vocab_size"},
                                                            {BpeStop::MinFrequency, "min_frequency"},
                                                            {BpeStop::NoPairs, "no_pairs"}}};
  return name_of(kStops, s);
}

const std::array<int32_t, 256>& bpe_byte_ids() {
  static const std::array<int32_t, 256> ids = [] {
    std::array<int32_t, 256> r{};
    const auto& bytes = bpe_id_bytes();
    for (int id = 0; id < 256; ++id) r[bytes[size_t(id)]] = id;
    return r;
  }();
  return ids;
}

const std::array<uint8_t, 256>& bpe_id_bytes() {
  static const std::array<uint8_t, 256> bytes = [] {
    std::array<uint8_t, 256> r{};
    for (int b = 0; b < 256; ++b) r[size_t(b)] = uint8_t(b);
    std::sort(r.begin(), r.end(),
              [](uint8_t x, uint8_t y) { return byte_to_codepoint(x) < byte_to_codepoint(y); });
    return r;
  }();
  return bytes;
}

std::vector<std::pair<std::string, uint64_t>> count_pretokens(std::span<const std::string> docs,
                                                              std::span<const std::string> special_tokens) {
  std::vector<const std::string*> texts;
  texts.reserve(docs.size());
  for (const auto& d : docs) texts.push_back(&d);
  return count_impl(texts.size(), texts.data(), special_tokens,
                    [](size_t i) { return fmt::format("document {}", i); });
}

BpeTrainResult train_bpe(std::span<const std::string> docs, const BpeTrainOptions& opt) {
  check_options(opt);
  const auto t0 = std::chrono::steady_clock::now();
  auto words = count_pretokens(docs, opt.special_tokens);
  const double secs = seconds_since(t0);
  BpeTrainResult r = train_bpe_words(std::move(words), opt);
  r.documents = docs.size();
  r.text_bytes = 0;
  for (const auto& d : docs) r.text_bytes += d.size();
  r.seconds_count = secs;
  return r;
}

BpeTrainResult train_bpe(std::span<const Document> docs, const BpeTrainOptions& opt) {
  check_options(opt);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<const std::string*> texts;
  texts.reserve(docs.size());
  for (const auto& d : docs) texts.push_back(&d.text);
  auto words = count_impl(texts.size(), texts.data(), opt.special_tokens,
                          [&](size_t i) { return fmt::format("document {}", json(docs[i].id).dump()); });
  const double secs = seconds_since(t0);
  BpeTrainResult r = train_bpe_words(std::move(words), opt);
  r.documents = docs.size();
  r.text_bytes = 0;
  for (const auto& d : docs) r.text_bytes += d.text.size();
  r.seconds_count = secs;
  return r;
}

BpeTrainResult train_bpe_words(std::vector<std::pair<std::string, uint64_t>> words,
                               const BpeTrainOptions& opt) {
  check_options(opt);
  const auto t0 = std::chrono::steady_clock::now();
  std::sort(words.begin(), words.end());
  std::erase_if(words, [](const auto& w) { return w.first.empty() || w.second == 0; });
  for (size_t i = 1; i < words.size(); ++i)
    TL_CHECK(words[i].first != words[i - 1].first, "train_bpe_words: word {} is listed twice",
             json(bytes_to_unicode(words[i].first)).dump());
  TL_CHECK(!words.empty(), "tokenizer train: the corpus is empty (no text to learn merges from)");
  TL_CHECK(words.size() < size_t(std::numeric_limits<uint32_t>::max()),
           "tokenizer train: {} distinct words is too many", words.size());

  BpeTrainResult r;
  r.special_tokens = opt.special_tokens;
  r.tokens = byte_tokens();
  r.unique_words = words.size();
  std::unordered_map<std::string, int32_t> token_index;
  for (size_t id = 0; id < r.tokens.size(); ++id) token_index.emplace(r.tokens[id], int32_t(id));

  // Words as runs of token ids in one flat buffer; merges only shrink them, so they shrink in place.
  const auto& byte_ids = bpe_byte_ids();
  std::vector<int32_t> sym;
  std::vector<size_t> wbeg(words.size());
  std::vector<uint32_t> wlen(words.size());
  std::vector<uint64_t> wcount(words.size());
  for (size_t w = 0; w < words.size(); ++w) {
    const std::string& s = words[w].first;
    TL_CHECK(s.size() < (1u << 31), "tokenizer train: a word of {} bytes is too long", s.size());
    wbeg[w] = sym.size();
    wlen[w] = uint32_t(s.size());
    wcount[w] = words[w].second;
    r.words += words[w].second;
    for (char c : s) sym.push_back(byte_ids[uint8_t(c)]);
  }

  std::unordered_map<uint64_t, uint32_t> pair_index;
  std::vector<PairStat> pairs;
  std::vector<uint32_t> touched;  // pairs whose count rose in this step: queued at its end
  uint32_t step = 0;
  const auto add = [&](int32_t a, int32_t b, int64_t delta, uint32_t w) {
    const auto [it, inserted] = pair_index.try_emplace(pair_key(a, b), uint32_t(pairs.size()));
    if (inserted) pairs.push_back(PairStat{a, b, 0, {}, ~0u, false});
    PairStat& p = pairs[it->second];
    p.count += delta;
    if (delta > 0) {
      if (p.where.empty() || p.where.back() != w) p.where.push_back(w);
      if (p.pushed_at != step) {
        p.pushed_at = step;
        touched.push_back(it->second);
      }
    }
  };
  for (size_t w = 0; w < words.size(); ++w) {
    const int32_t* s = sym.data() + wbeg[w];
    for (uint32_t i = 0; i + 1 < wlen[w]; ++i) add(s[i], s[i + 1], int64_t(wcount[w]), uint32_t(w));
  }
  std::priority_queue<Candidate, std::vector<Candidate>, CandidateLess> heap;
  const auto queue_touched = [&] {
    for (uint32_t idx : touched)
      if (pairs[idx].count > 0) heap.push({uint64_t(pairs[idx].count), pairs[idx].left, pairs[idx].right});
    touched.clear();
  };
  queue_touched();

  const size_t target = size_t(opt.vocab_size) - opt.special_tokens.size();
  const uint64_t min_count = std::max<uint64_t>(1, opt.min_frequency);
  r.stop = BpeStop::VocabSize;
  while (r.tokens.size() < target) {
    if (heap.empty()) {
      r.stop = BpeStop::NoPairs;
      break;
    }
    const Candidate top = heap.top();
    heap.pop();
    const uint32_t idx = pair_index.at(pair_key(top.left, top.right));
    if (pairs[idx].banned) continue;
    const int64_t now = pairs[idx].count;
    if (uint64_t(now) != top.count) {  // stale: counts of old pairs only fall, so re-queue the true one
      if (now > 0) heap.push({uint64_t(now), top.left, top.right});
      continue;
    }
    if (top.count < min_count) {
      r.stop = BpeStop::MinFrequency;
      break;
    }
    const int32_t a = top.left, b = top.right;
    std::string merged = r.tokens[size_t(a)] + r.tokens[size_t(b)];
    if (token_index.count(merged)) {
      pairs[idx].banned = true;
      pairs[idx].where = {};
      ++r.skipped_pairs;
      continue;
    }
    const auto x = int32_t(r.tokens.size());
    token_index.emplace(merged, x);
    r.tokens.push_back(std::move(merged));
    r.merges.emplace_back(a, b);
    r.merge_counts.push_back(top.count);
    ++step;

    const std::vector<uint32_t> where = std::move(pairs[idx].where);  // `add` may grow `pairs`
    pairs[idx].where = {};
    for (uint32_t w : where) {
      int32_t* s = sym.data() + wbeg[w];
      const uint32_t n = wlen[w];
      const auto c = int64_t(wcount[w]);
      uint32_t j = 0;  // write position: the merged word is built in place, left to right
      for (uint32_t i = 0; i < n;) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
          add(a, b, -c, w);
          // The left neighbour is already final (it may be x from the previous occurrence).
          if (j > 0) {
            add(s[j - 1], a, -c, w);
            add(s[j - 1], x, c, w);
          }
          if (i + 2 < n) {
            add(b, s[i + 2], -c, w);
            add(x, s[i + 2], c, w);
          }
          s[j++] = x;
          i += 2;
        } else {
          s[j++] = s[i++];
        }
      }
      wlen[w] = j;
    }
    TL_CHECK(pairs[idx].count == 0, "train_bpe: internal error: pair count {} after merging",
             pairs[idx].count);
    queue_touched();
  }
  r.seconds_merge = seconds_since(t0);

  // A special token spelled like a learned token would get two ids.
  for (const std::string& sp : r.special_tokens)
    if (const auto raw = unicode_to_bytes(sp))
      if (const auto it = token_index.find(*raw); it != token_index.end())
        fail("tokenizer train: special token {} is spelled like a learned token (id {}); choose another name",
             json(sp).dump(), it->second);

  if (opt.keep_words) {
    r.words_kept.resize(words.size());
    for (size_t w = 0; w < words.size(); ++w) {
      BpeWord& bw = r.words_kept[w];
      bw.bytes = std::move(words[w].first);
      bw.count = wcount[w];
      bw.ids.assign(sym.begin() + ptrdiff_t(wbeg[w]), sym.begin() + ptrdiff_t(wbeg[w] + wlen[w]));
    }
  }
  return r;
}

std::string BpeTrainResult::to_json() const {
  // Through Tokenizer: it checks the file loads, and writes the vocabulary in id order.
  return Tokenizer::from_json(make_doc(tokens, merges, special_tokens).dump(), "trained tokenizer").to_json();
}

Tokenizer BpeTrainResult::tokenizer() const {
  return Tokenizer::from_json(make_doc(tokens, merges, special_tokens).dump(), "trained tokenizer");
}

Compression measure_compression(const Tokenizer& tok, std::span<const std::string> docs) {
  Compression c;
  c.documents = docs.size();
  for (const std::string& d : docs) {
    c.bytes += d.size();
    c.tokens += tok.encode(d).size();
    bool in_word = false;
    for (size_t i = 0; i < d.size();) {
      const bool space = is_python_space(char32_t(next_codepoint(d, i)));
      if (!space && !in_word) ++c.words;
      in_word = !space;
    }
  }
  return c;
}

}  // namespace tl
