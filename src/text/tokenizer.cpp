#include "text/tokenizer.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/error.hpp"
#include "core/file.hpp"
#include "text/tokenizer_json.hpp"
#include "text/unicode.hpp"

namespace tl {

namespace {

using json = nlohmann::json;

// The GPT-2 pattern that ByteLevel(use_regex = true) applies (HF tokenizers, pre_tokenizers/byte_level.rs).
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// The pattern of Meta's LLaMA-3 tokenizer.json; byte_level() writes it.
constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// A short rendering of a JSON value for error messages.
std::string show(const json& v) {
  std::string s = v.dump();
  if (s.size() > 80) {
    size_t cut = 77;
    while (cut > 0 && (uint8_t(s[cut]) & 0xC0) == 0x80) --cut;  // keep whole UTF-8 characters
    s = s.substr(0, cut) + "...";
  }
  return s;
}

std::string_view type_name(const json& v) {
  return v.type_name();
}

// Nesting depth, found without recursion: nlohmann's dump() (used for error messages and to_json) recurses,
// so a hostile file must not reach it with deep nesting.
size_t json_depth(const json& root) {
  size_t deepest = 0;
  std::vector<std::pair<const json*, size_t>> stack{{&root, 1}};
  while (!stack.empty()) {
    const auto [v, d] = stack.back();
    stack.pop_back();
    deepest = std::max(deepest, d);
    for (const json& child : *v)
      if (child.is_structured()) stack.emplace_back(&child, d + 1);
  }
  return deepest;
}

uint64_t mix64(uint64_t x) {
  x ^= x >> 32;
  x *= 0xd6e8feb86659fd93ull;
  x ^= x >> 32;
  return x;
}

uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ (s.size() * 0xff51afd7ed558ccdull);
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = mix64(h ^ w) * 0x9e3779b97f4a7c15ull;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, s.data() + i, s.size() - i);
  return mix64(h ^ tail);
}

size_t table_size_for(size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap *= 2;  // load factor at most 1/2 keeps linear probes short
  return cap;
}

// Merge ranks keyed by the pair of ids: open addressing, linear probing. Key and value share a slot so a
// lookup costs one cache miss.
class PairMap {
 public:
  struct Value {
    uint32_t rank;
    int32_t id;
  };
  void reserve(size_t n) {
    slots_.assign(table_size_for(n), Slot{kEmpty, {0, -1}});
    mask_ = slots_.size() - 1;
  }
  // Later duplicates overwrite earlier ones, as in HF tokenizers (the merge map is built by collect()).
  void insert(int32_t a, int32_t b, Value v) {
    const uint64_t key = make_key(a, b);
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == kEmpty || slots_[i].key == key) {
        slots_[i] = Slot{key, v};
        return;
      }
    }
  }
  void prefetch(int32_t a, int32_t b) const { __builtin_prefetch(&slots_[slot(make_key(a, b))]); }
  const Value* find(int32_t a, int32_t b) const {
    const uint64_t key = make_key(a, b);
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i].value;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;  // ids are below 2^31, so no real key has all bits set
  struct Slot {
    uint64_t key;
    Value value;
  };
  static uint64_t make_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  size_t slot(uint64_t key) const { return size_t(mix64(key * 0x9e3779b97f4a7c15ull)) & mask_; }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

// Raw bytes -> model id, for the ignore_merges lookup of a whole pre-token. A slot holds the key's first
// 8 bytes, so most lookups (short words) touch one cache line and never the key arena.
class BytesMap {
 public:
  void reserve(size_t n) {
    slots_.assign(table_size_for(n), Slot{0, 0, -1});
    mask_ = slots_.size() - 1;
  }
  void insert(std::string_view key, int32_t id) {
    const uint64_t head = head_of(key);
    for (size_t i = size_t(hash_bytes(key)) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].id < 0) {
        slots_[i] = Slot{head, uint32_t(key.size()), id};
        if (key.size() > 8) {
          if (size_t(id) >= tails_.size()) tails_.resize(size_t(id) + 1, 0);
          tails_[size_t(id)] = uint32_t(arena_.size());
          arena_.append(key.substr(8));
        }
        return;
      }
    }
  }
  static uint64_t hash(std::string_view key) { return hash_bytes(key); }
  void prefetch(uint64_t hash) const { __builtin_prefetch(&slots_[size_t(hash) & mask_]); }
  // `hash` is hash(key).
  int32_t find(std::string_view key, uint64_t hash) const {
    const uint64_t head = head_of(key);
    for (size_t i = size_t(hash) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.id < 0) return -1;
      if (s.head == head && s.len == key.size() &&
          (s.len <= 8 || std::memcmp(arena_.data() + tails_[size_t(s.id)], key.data() + 8, s.len - 8) == 0))
        return s.id;
    }
  }

 private:
  struct Slot {
    uint64_t head;  // the first min(8, len) bytes, zero padded
    uint32_t len;
    int32_t id;
  };
  static uint64_t head_of(std::string_view key) {
    uint64_t h = 0;
    std::memcpy(&h, key.data(), std::min<size_t>(8, key.size()));
    return h;
  }
  std::vector<Slot> slots_;
  std::vector<uint32_t> tails_;  // by id: offset in arena_ of the bytes after the first 8
  std::string arena_;
  size_t mask_ = 0;
};

// Per-call matching state: PCRE2 match data is not shareable between threads.
struct MatchScratch {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* mctx = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  MatchScratch() {
    md = pcre2_match_data_create(1, nullptr);  // only the whole match is needed
    if (!md) throw std::bad_alloc();
  }
  ~MatchScratch() {
    if (jit_stack) pcre2_jit_stack_free(jit_stack);
    if (mctx) pcre2_match_context_free(mctx);
    pcre2_match_data_free(md);
  }
  MatchScratch(const MatchScratch&) = delete;
  MatchScratch& operator=(const MatchScratch&) = delete;
  // The default 32 KiB JIT stack suffices for ordinary text; very long runs of one class may need more.
  bool grow_jit_stack() {
    if (jit_stack) return false;
    mctx = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, nullptr);
    if (!mctx || !jit_stack) throw std::bad_alloc();
    pcre2_jit_stack_assign(mctx, nullptr, jit_stack);
    return true;
  }
};

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof buf) < 0) return fmt::format("PCRE2 error {}", code);
  return reinterpret_cast<const char*>(buf);
}

class Regex {
 public:
  Regex(std::string_view pattern, bool literal, std::string_view where) : pattern_(pattern) {
    int err = 0;
    PCRE2_SIZE at = 0;
    const uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    code_ =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), opts, &err, &at, nullptr);
    if (!code_)
      fail("{}: cannot compile {}: {} at offset {}", where, show(json(pattern_)), pcre2_message(err), at);
    // JIT is an optimisation only: if this PCRE2 build lacks it, pcre2_match interprets.
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Splits s into matches and the text between them ("Isolated"), calling emit on each non-empty piece
  // in order. An empty match is a boundary, as in HF tokenizers' Pattern::find_matches.
  template <class F>
  void split(std::string_view s, MatchScratch& ms, F&& emit) const {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t prev = 0, start = 0;
    while (start <= s.size()) {
      const int rc = pcre2_match(code_, subject, s.size(), start, PCRE2_NO_UTF_CHECK, ms.md, ms.mctx);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT && ms.grow_jit_stack()) continue;
      if (rc < 0) fail("pre-tokenizer regex {}: {}", show(json(pattern_)), pcre2_message(rc));
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(ms.md);
      const size_t b = ov[0], e = ov[1];  // copied before emit: nested splits reuse the match data
      if (b > prev) emit(s.substr(prev, b - prev));
      if (e > b) {
        emit(s.substr(b, e - b));
        prev = start = e;
      } else {
        prev = b;
        if (b >= s.size()) break;
        start = b + 1;
        while (start < s.size() && (uint8_t(s[start]) & 0xC0) == 0x80) ++start;  // next character
      }
    }
    if (prev < s.size()) emit(s.substr(prev));
  }

 private:
  std::string pattern_;
  pcre2_code* code_ = nullptr;
};

// Added tokens are found by walking a byte trie from each position whose byte can start one.
class AddedTrie {
 public:
  AddedTrie() { nodes_.emplace_back(); }
  bool empty() const { return nodes_.size() == 1; }
  void insert(std::string_view s, int32_t id) {
    uint32_t n = 0;
    for (char c : s) {
      uint32_t child = find_child(n, uint8_t(c));
      if (child == 0) {
        child = uint32_t(nodes_.size());
        nodes_[n].kids.emplace_back(uint8_t(c), child);
        nodes_.emplace_back();
      }
      n = child;
    }
    nodes_[n].id = id;
    first_[uint8_t(s[0])] = true;
  }
  bool can_start(uint8_t c) const { return first_[c]; }
  // Longest added token starting at s[i]: {length, id}, or {0, -1}.
  std::pair<size_t, int32_t> longest(std::string_view s, size_t i) const {
    std::pair<size_t, int32_t> best{0, -1};
    uint32_t n = 0;
    for (size_t j = i; j < s.size(); ++j) {
      n = find_child(n, uint8_t(s[j]));
      if (n == 0) break;
      if (nodes_[n].id >= 0) best = {j + 1 - i, nodes_[n].id};
    }
    return best;
  }

 private:
  struct Node {
    int32_t id = -1;
    std::vector<std::pair<uint8_t, uint32_t>> kids;
  };
  uint32_t find_child(uint32_t n, uint8_t c) const {
    for (const auto& [k, child] : nodes_[n].kids)
      if (k == c) return child;
    return 0;
  }
  std::vector<Node> nodes_;
  std::array<bool, 256> first_{};
};

struct AddedToken {
  int32_t id;
  std::string content;
  bool special, normalized;
};

enum : uint8_t { kInModel = 1, kAdded = 2, kSpecial = 4 };

}  // namespace

struct Tokenizer::Impl {
  std::vector<std::string> tokens;  // by id, as in the file
  std::vector<uint8_t> flags;       // by id: kInModel | kAdded | kSpecial
  std::unordered_map<std::string, int32_t> by_token;
  std::vector<uint32_t> dec_off;  // decode bytes of id i: dec[dec_off[i], dec_off[i + 1])
  std::string dec;
  BytesMap model_bytes;
  std::array<int32_t, 256> byte_id{};
  PairMap merge_map;
  std::vector<std::pair<std::string, std::string>> merges;
  bool ignore_merges = false;
  json unk_token;
  std::vector<AddedToken> added;
  AddedTrie trie;
  // Pre-tokenizer as a list of steps over pieces: a regex split, or ByteLevel's add_prefix_space.
  struct Step {
    const Regex* re;  // nullptr: prepend a space unless the piece starts with one
  };
  std::vector<std::unique_ptr<Regex>> regexes;
  std::vector<Step> steps;
  std::vector<int32_t> prefix, suffix;  // TemplateProcessing around sequence A
  int32_t bos = -1, eos = -1;
  json pre_tokenizer, post_processor, decoder;

  struct Scratch {
    MatchScratch ms;
    std::deque<std::string> owned;  // pieces with a prepended space (deque: references stay valid)
    struct Sym {
      int32_t id, prev, next;
    };
    std::vector<Sym> syms;
    std::vector<uint64_t> heap;  // (rank << 32) | position of the pair's left symbol
    // Pre-tokens waiting for BPE, with their hash: their table slots are prefetched as they arrive, so
    // the cache misses of a batch overlap instead of coming one after another.
    std::vector<std::pair<std::string_view, uint64_t>> pending;
  };
  static constexpr size_t kBatch = 16;

  void queue(std::string_view piece, Scratch& sc, std::vector<int32_t>& out) const {
    if (sc.pending.size() == kBatch) flush(sc, out);
    uint64_t h = 0;
    if (ignore_merges && piece.size() > 1) {
      h = BytesMap::hash(piece);
      model_bytes.prefetch(h);
    }
    sc.pending.emplace_back(piece, h);
  }
  void flush(Scratch& sc, std::vector<int32_t>& out) const {
    for (const auto& [piece, h] : sc.pending) bpe(piece, h, sc, out);
    sc.pending.clear();
  }

  template <class F>
  void split_added(std::string_view text, F&& f) const {
    if (trie.empty()) {
      if (!text.empty()) f(text, -1);
      return;
    }
    size_t seg = 0;
    for (size_t i = 0; i < text.size();) {
      if (!trie.can_start(uint8_t(text[i]))) {
        ++i;
        continue;
      }
      const auto [len, id] = trie.longest(text, i);
      if (len == 0) {
        ++i;
        continue;
      }
      if (i > seg) f(text.substr(seg, i - seg), -1);
      f(text.substr(i, len), id);
      i += len;
      seg = i;
    }
    if (seg < text.size()) f(text.substr(seg), -1);
  }

  template <class F>
  void run_steps(size_t k, std::string_view piece, Scratch& sc, F& sink) const {
    if (piece.empty()) return;
    if (k == steps.size()) {
      sink(piece);
      return;
    }
    if (steps[k].re) {
      steps[k].re->split(piece, sc.ms, [&](std::string_view p) { run_steps(k + 1, p, sc, sink); });
    } else if (piece[0] == ' ') {
      run_steps(k + 1, piece, sc, sink);
    } else {
      std::string& spaced = sc.owned.emplace_back(1, ' ');
      spaced.append(piece);
      run_steps(k + 1, spaced, sc, sink);
    }
  }

  // BPE on one pre-token: merges applied lowest rank first, leftmost first among equal ranks.
  // `hash` is BytesMap::hash(p) when ignore_merges applies.
  void bpe(std::string_view p, uint64_t hash, Scratch& sc, std::vector<int32_t>& out) const {
    const size_t n = p.size();
    if (n > size_t(std::numeric_limits<int32_t>::max()))
      fail("encode: a pre-token of {} bytes is too long", n);
    if (n == 1) {
      out.push_back(byte_id[uint8_t(p[0])]);
      return;
    }
    if (ignore_merges) {
      const int32_t id = model_bytes.find(p, hash);
      if (id >= 0) {
        out.push_back(id);
        return;
      }
    }
    auto& s = sc.syms;
    auto& heap = sc.heap;
    s.resize(n);
    heap.clear();
    for (size_t i = 0; i < n; ++i)
      s[i] = {byte_id[uint8_t(p[i])], int32_t(i) - 1, i + 1 < n ? int32_t(i + 1) : -1};
    const auto push = [&](int32_t pos, uint32_t rank) {
      heap.push_back((uint64_t(rank) << 32) | uint32_t(pos));
      std::push_heap(heap.begin(), heap.end(), std::greater<>{});
    };
    for (size_t i = 0; i + 1 < n; ++i) merge_map.prefetch(s[i].id, s[i + 1].id);
    for (size_t i = 0; i + 1 < n; ++i)
      if (const auto* m = merge_map.find(s[i].id, s[i + 1].id)) push(int32_t(i), m->rank);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
      const uint64_t key = heap.back();
      heap.pop_back();
      const auto pos = int32_t(uint32_t(key));
      auto& a = s[size_t(pos)];
      if (a.id < 0 || a.next < 0) continue;
      auto& b = s[size_t(a.next)];
      // A stale entry: one side was merged since; ranks are unique per pair, so the rank tells.
      const auto* m = merge_map.find(a.id, b.id);
      if (!m || m->rank != uint32_t(key >> 32)) continue;
      a.id = m->id;
      b.id = -1;
      a.next = b.next;
      if (a.next >= 0) s[size_t(a.next)].prev = pos;
      if (a.prev >= 0)
        if (const auto* l = merge_map.find(s[size_t(a.prev)].id, a.id)) push(a.prev, l->rank);
      if (a.next >= 0)
        if (const auto* r = merge_map.find(a.id, s[size_t(a.next)].id)) push(pos, r->rank);
    }
    for (int32_t i = 0; i >= 0; i = s[size_t(i)].next) out.push_back(s[size_t(i)].id);
  }

  void load(const json& doc, std::string_view what);
  void load_vocab(const json& model, const json* added_tokens, std::string_view what);
  void load_merges(const json& model, std::string_view what);
  void load_pre_tokenizer(const json& pt, std::string_view what);
  void load_post_processor(const json& pp, std::string_view what);
};

namespace {

const json* member(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  const auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

bool is_null_or_absent(const json* v) {
  return !v || v->is_null();
}

bool get_bool(const json& obj, const char* key, bool dflt, std::string_view where) {
  const json* v = member(obj, key);
  if (is_null_or_absent(v)) return dflt;
  if (!v->is_boolean()) fail("{}.{}: expected true or false, found {}", where, key, show(*v));
  return v->get<bool>();
}

const std::string& get_string(const json& obj, const char* key, std::string_view where) {
  const json* v = member(obj, key);
  if (!v) fail("{}.{}: missing", where, key);
  if (!v->is_string()) fail("{}.{}: expected a string, found {}", where, key, show(*v));
  return v->get_ref<const std::string&>();
}

std::string type_of(const json& obj, std::string_view where) {
  if (!obj.is_object()) fail("{}: expected an object, found {}", where, show(obj));
  return get_string(obj, "type", where);
}

}  // namespace

void Tokenizer::Impl::load_vocab(const json& model, const json* added_tokens, std::string_view what) {
  const json* vocab = member(model, "vocab");
  if (!vocab) fail("{}: model.vocab: missing", what);
  if (!vocab->is_object())
    fail("{}: model.vocab: expected an object of token -> id, found {}", what, type_name(*vocab));
  if (added_tokens && !added_tokens->is_array())
    fail("{}: added_tokens: expected an array, found {}", what, type_name(*added_tokens));

  // Ids must run 0..n-1 without gaps, so no id can reach the number of entries; checking that first
  // also keeps a hostile file from making us allocate for a huge id.
  const size_t entries = vocab->size() + (added_tokens ? added_tokens->size() : 0);
  const auto check_id = [&](const json& v, std::string_view where, std::string_view tok) {
    if (!v.is_number_integer())
      fail("{}: {}: id of {} must be an integer, found {}", what, where, show(json(tok)), show(v));
    const auto id = v.get<int64_t>();
    if (id < 0 || uint64_t(id) >= entries)
      fail("{}: {}: id {} of {} is out of range (the file has {} tokens, so ids must be 0..{})", what, where,
           id, show(json(tok)), entries, int64_t(entries) - 1);
    return int32_t(id);
  };
  const auto assign = [&](int32_t id, const std::string& tok, std::string_view where) {
    if (size_t(id) >= tokens.size()) {
      tokens.resize(size_t(id) + 1);
      flags.resize(size_t(id) + 1, 0);
    }
    if (flags[size_t(id)] != 0)
      fail("{}: {}: id {} is used by both {} and {}", what, where, id, show(json(tokens[size_t(id)])),
           show(json(tok)));
    tokens[size_t(id)] = tok;
    flags[size_t(id)] = kInModel;
    by_token.emplace(tok, id);
  };

  by_token.reserve(entries);
  for (const auto& [tok, v] : vocab->items()) assign(check_id(v, "model.vocab", tok), tok, "model.vocab");

  if (added_tokens) {
    for (size_t i = 0; i < added_tokens->size(); ++i) {
      const json& at = (*added_tokens)[i];
      const std::string where = fmt::format("added_tokens[{}]", i);
      if (!at.is_object()) fail("{}: {}: expected an object, found {}", what, where, show(at));
      const std::string& content = get_string(at, "content", fmt::format("{}: {}", what, where));
      if (content.empty()) fail("{}: {}.content: empty", what, where);
      const json* idv = member(at, "id");
      if (!idv) fail("{}: {}.id: missing", what, where);
      const int32_t id = check_id(*idv, where, content);
      // Options that change how the token is matched in text; none of the LLaMA-3 tokens uses them.
      for (const char* key : {"single_word", "lstrip", "rstrip"})
        if (get_bool(at, key, false, fmt::format("{}: {}", what, where)))
          fail("{}: {}.{}: true is not supported (token {})", what, where, key, show(json(content)));
      const bool special = get_bool(at, "special", false, fmt::format("{}: {}", what, where));
      const bool normalized = get_bool(at, "normalized", !special, fmt::format("{}: {}", what, where));
      const auto it = by_token.find(content);
      if (it != by_token.end() && it->second != id)
        fail("{}: {}: {} already has id {}, not {}", what, where, show(json(content)), it->second, id);
      if (it == by_token.end()) {
        assign(id, content, where);
        flags[size_t(id)] = 0;
      } else if (flags[size_t(id)] & kAdded) {
        fail("{}: {}: {} is listed twice", what, where, show(json(content)));
      }
      flags[size_t(id)] |= kAdded | (special ? kSpecial : 0);
      added.push_back({id, content, special, normalized});
    }
  }

  for (size_t id = 0; id < tokens.size(); ++id)
    if (flags[id] == 0)
      fail("{}: model.vocab: no token has id {} (ids must run 0..{} without gaps)", what, id,
           tokens.size() - 1);
  if (tokens.empty()) fail("{}: model.vocab: empty", what);
}

void Tokenizer::Impl::load_merges(const json& model, std::string_view what) {
  const json* ms = member(model, "merges");
  if (is_null_or_absent(ms)) {
    merge_map.reserve(0);
    return;
  }
  if (!ms->is_array()) fail("{}: model.merges: expected an array, found {}", what, type_name(*ms));
  merges.reserve(ms->size());
  merge_map.reserve(ms->size());
  const auto model_id = [&](const std::string& tok, size_t i) {
    const auto it = by_token.find(tok);
    if (it == by_token.end() || !(flags[size_t(it->second)] & kInModel))
      fail("{}: model.merges[{}]: {} is not in model.vocab", what, i, show(json(tok)));
    return it->second;
  };
  for (size_t i = 0; i < ms->size(); ++i) {
    const json& m = (*ms)[i];
    std::string left, right;
    if (m.is_string()) {  // "left right": tokens never hold a plain space in byte-level BPE
      const auto& s = m.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == s.size() ||
          s.find(' ', sp + 1) != std::string::npos)
        fail("{}: model.merges[{}]: expected \"left right\", found {}", what, i, show(m));
      left = s.substr(0, sp);
      right = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      fail("{}: model.merges[{}]: expected \"left right\" or [\"left\", \"right\"], found {}", what, i,
           show(m));
    }
    const int32_t a = model_id(left, i), b = model_id(right, i);
    const auto it = by_token.find(left + right);
    if (it == by_token.end() || !(flags[size_t(it->second)] & kInModel))
      fail("{}: model.merges[{}]: the merged token {} is not in model.vocab", what, i,
           show(json(left + right)));
    merge_map.insert(a, b, {uint32_t(i), it->second});
    merges.emplace_back(std::move(left), std::move(right));
  }
}

void Tokenizer::Impl::load_pre_tokenizer(const json& pt, std::string_view what) {
  if (pt.is_null()) fail("{}: pre_tokenizer: missing; byte-level BPE needs a ByteLevel pre-tokenizer", what);
  std::vector<std::pair<const json*, std::string>> list;
  const std::string top = type_of(pt, fmt::format("{}: pre_tokenizer", what));
  if (top == "Sequence") {
    const json* seq = member(pt, "pretokenizers");
    if (!seq || !seq->is_array()) fail("{}: pre_tokenizer.pretokenizers: expected an array", what);
    for (size_t i = 0; i < seq->size(); ++i)
      list.emplace_back(&(*seq)[i], fmt::format("pre_tokenizer.pretokenizers[{}]", i));
  } else {
    list.emplace_back(&pt, "pre_tokenizer");
  }
  bool byte_level = false;
  for (const auto& [step, where] : list) {
    const std::string type = type_of(*step, fmt::format("{}: {}", what, where));
    if (byte_level)
      fail("{}: {}: {} after ByteLevel is not supported (ByteLevel must come last)", what, where,
           show(json(type)));
    if (type == "Split") {
      const json* pat = member(*step, "pattern");
      if (!pat || !pat->is_object())
        fail("{}: {}.pattern: expected {{\"Regex\": ...}} or {{\"String\": ...}}", what, where);
      const json* rx = member(*pat, "Regex");
      const json* lit = member(*pat, "String");
      const json* src = rx ? rx : lit;
      if (!src || !src->is_string())
        fail("{}: {}.pattern: expected {{\"Regex\": ...}} or {{\"String\": ...}}, found {}", what, where,
             show(*pat));
      const std::string behavior = get_string(*step, "behavior", fmt::format("{}: {}", what, where));
      if (behavior != "Isolated")
        fail("{}: {}.behavior: {} is not supported (only \"Isolated\")", what, where, show(json(behavior)));
      if (get_bool(*step, "invert", false, fmt::format("{}: {}", what, where)))
        fail("{}: {}.invert: true is not supported", what, where);
      regexes.push_back(
          std::make_unique<Regex>(src->get<std::string>(), !rx, fmt::format("{}: {}.pattern", what, where)));
      steps.push_back({regexes.back().get()});
    } else if (type == "ByteLevel") {
      byte_level = true;
      // HF defaults when the keys are absent: add_prefix_space and use_regex both true.
      if (get_bool(*step, "add_prefix_space", true, fmt::format("{}: {}", what, where)))
        steps.push_back({nullptr});
      if (get_bool(*step, "use_regex", true, fmt::format("{}: {}", what, where))) {
        regexes.push_back(std::make_unique<Regex>(kGpt2Pattern, false, "GPT-2 pattern"));
        steps.push_back({regexes.back().get()});
      }
    } else {
      fail("{}: {}.type: {} is not supported (expected Split, ByteLevel or a Sequence of them)", what, where,
           show(json(type)));
    }
  }
  if (!byte_level) fail("{}: pre_tokenizer: no ByteLevel step; only byte-level BPE is supported", what);
}

void Tokenizer::Impl::load_post_processor(const json& pp, std::string_view what) {
  if (pp.is_null()) return;
  std::vector<std::pair<const json*, std::string>> list;
  const std::string top = type_of(pp, fmt::format("{}: post_processor", what));
  if (top == "Sequence") {
    const json* seq = member(pp, "processors");
    if (!seq || !seq->is_array()) fail("{}: post_processor.processors: expected an array", what);
    for (size_t i = 0; i < seq->size(); ++i)
      list.emplace_back(&(*seq)[i], fmt::format("post_processor.processors[{}]", i));
  } else {
    list.emplace_back(&pp, "post_processor");
  }
  bool have_template = false;
  for (const auto& [proc, where] : list) {
    const std::string type = type_of(*proc, fmt::format("{}: {}", what, where));
    if (type == "ByteLevel") continue;  // only adjusts offsets, which we do not report
    if (type != "TemplateProcessing")
      fail("{}: {}.type: {} is not supported (expected TemplateProcessing, ByteLevel or a Sequence of them)",
           what, where, show(json(type)));
    if (have_template) fail("{}: {}: a second TemplateProcessing is not supported", what, where);
    have_template = true;
    const json* single = member(*proc, "single");
    const json* specials = member(*proc, "special_tokens");
    if (!single || !single->is_array()) fail("{}: {}.single: expected an array", what, where);
    bool seen_a = false;
    for (size_t i = 0; i < single->size(); ++i) {
      const json& piece = (*single)[i];
      const std::string pw = fmt::format("{}: {}.single[{}]", what, where, i);
      if (const json* seq = member(piece, "Sequence")) {
        if (get_string(*seq, "id", pw) != "A" || seen_a)
          fail("{}: only one sequence, \"A\", is supported", pw);
        seen_a = true;
      } else if (const json* st = member(piece, "SpecialToken")) {
        const std::string& name = get_string(*st, "id", pw);
        const json* entry = specials ? member(*specials, name.c_str()) : nullptr;
        if (!entry) fail("{}: {} is not in {}.special_tokens", pw, show(json(name)), where);
        const json* ids = member(*entry, "ids");
        if (!ids || !ids->is_array())
          fail("{}: {}.special_tokens[{}].ids: expected an array", what, where, show(json(name)));
        for (const json& idv : *ids) {
          if (!idv.is_number_integer() || idv.get<int64_t>() < 0 ||
              idv.get<int64_t>() >= int64_t(tokens.size()))
            fail("{}: {}.special_tokens[{}].ids: {} is not a token id", what, where, show(json(name)),
                 show(idv));
          (seen_a ? suffix : prefix).push_back(idv.get<int32_t>());
        }
      } else {
        fail("{}: expected {{\"Sequence\": ...}} or {{\"SpecialToken\": ...}}, found {}", pw, show(piece));
      }
    }
    if (!seen_a) fail("{}: {}.single: no {{\"Sequence\": {{\"id\": \"A\"}}}}", what, where);
  }
}

void Tokenizer::Impl::load(const json& doc, std::string_view what) {
  if (!doc.is_object()) fail("{}: expected a JSON object at the top level, found {}", what, type_name(doc));
  const json null;
  const auto section = [&](const char* key) -> const json& {
    const json* v = member(doc, key);
    return v ? *v : null;
  };

  if (!section("normalizer").is_null())
    fail("{}: normalizer: {} is not supported (only null)", what, show(section("normalizer")));
  if (!section("truncation").is_null())
    fail("{}: truncation: {} is not supported (only null)", what, show(section("truncation")));
  // padding only matters for batches, which callers assemble themselves, so it is ignored.

  const json* model = member(doc, "model");
  if (!model) fail("{}: model: missing", what);
  if (!model->is_object()) fail("{}: model: expected an object, found {}", what, type_name(*model));
  if (const json* type = member(*model, "type"); type && *type != "BPE")
    fail("{}: model.type: {} is not supported (only \"BPE\")", what, show(*type));
  if (const json* d = member(*model, "dropout");
      d && !d->is_null() && !(d->is_number() && d->get<double>() == 0.0))
    fail("{}: model.dropout: {} is not supported (only null; dropout makes encoding random)", what, show(*d));
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (const json* v = member(*model, key); v && !v->is_null() && *v != "")
      fail("{}: model.{}: {} is not supported (only null)", what, key, show(*v));
  if (get_bool(*model, "byte_fallback", false, fmt::format("{}: model", what)))
    fail("{}: model.byte_fallback: true is not supported", what);
  ignore_merges = get_bool(*model, "ignore_merges", false, fmt::format("{}: model", what));
  if (const json* u = member(*model, "unk_token"); u && !u->is_null()) {
    if (!u->is_string()) fail("{}: model.unk_token: expected a string or null, found {}", what, show(*u));
    unk_token = *u;  // never needed: every byte has a token
  }

  load_vocab(*model, member(doc, "added_tokens"), what);
  load_merges(*model, what);

  for (int b = 0; b < 256; ++b) {
    const std::string s = bytes_to_unicode(std::string(1, char(b)));
    const auto it = by_token.find(s);
    if (it == by_token.end() || !(flags[size_t(it->second)] & kInModel))
      fail("{}: model.vocab: no token for byte 0x{:02X} ({}); byte-level BPE needs all 256", what, b,
           show(json(s)));
    byte_id[size_t(b)] = it->second;
  }

  pre_tokenizer = section("pre_tokenizer");
  load_pre_tokenizer(pre_tokenizer, what);
  post_processor = section("post_processor");
  load_post_processor(post_processor, what);
  decoder = section("decoder");
  if (decoder.is_null()) fail("{}: decoder: missing; expected ByteLevel", what);
  if (const std::string t = type_of(decoder, fmt::format("{}: decoder", what)); t != "ByteLevel")
    fail("{}: decoder.type: {} is not supported (only \"ByteLevel\")", what, show(json(t)));

  // Decode bytes: added tokens stand for their text as written. A model token maps back through the byte
  // map; one with a character outside the map stands for its own UTF-8 (as HF's ByteLevel decoder does).
  dec_off.reserve(tokens.size() + 1);
  model_bytes.reserve(tokens.size());
  for (size_t id = 0; id < tokens.size(); ++id) {
    dec_off.push_back(uint32_t(dec.size()));
    const std::optional<std::string> raw = unicode_to_bytes(tokens[id]);
    if ((flags[id] & kInModel) && raw) model_bytes.insert(*raw, int32_t(id));
    dec += (flags[id] & kAdded) || !raw ? tokens[id] : *raw;
  }
  dec_off.push_back(uint32_t(dec.size()));

  // The trie walk finds the longest match itself, so insertion order does not matter.
  for (const AddedToken& at : added) trie.insert(at.content, at.id);

  const auto lookup = [&](std::string_view tok) -> int32_t {
    const auto it = by_token.find(std::string(tok));
    return it == by_token.end() ? -1 : it->second;
  };
  bos = !prefix.empty() ? prefix.front() : lookup("<|begin_of_text|>");
  for (std::string_view e : {"<|end_of_text|>", "<|endoftext|>", "</s>"})
    if (eos < 0) eos = lookup(e);
}

Tokenizer Tokenizer::from_json(std::string_view text, std::string_view what) {
  json doc;
  try {
    doc = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", what, e.what());
  }
  if (json_depth(doc) > 32) fail("{}: JSON nested more than 32 levels deep", what);
  auto impl = std::make_shared<Impl>();
  try {
    impl->load(doc, what);
  } catch (const json::exception& e) {  // a value of an unexpected type that no check above caught
    fail("{}: {}", what, e.what());
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_file(const fs::path& path) {
  return from_json(read_file(path), path.string());
}

fs::path resolve_tokenizer_path(const fs::path& checkpoint, const fs::path& override_path) {
  std::error_code ec;
  if (!override_path.empty()) {
    if (fs::is_directory(override_path, ec)) {
      const fs::path f = override_path / "tokenizer.json";
      TL_CHECK(fs::is_regular_file(f, ec), "--tokenizer {}: directory has no tokenizer.json",
               override_path.string());
      return f;
    }
    TL_CHECK(fs::is_regular_file(override_path, ec),
             "--tokenizer {}: no such file or directory, expected tokenizer.json or a checkpoint directory "
             "holding "
             "one",
             override_path.string());
    return override_path;
  }
  const fs::path f = checkpoint / "tokenizer.json";
  TL_CHECK(fs::is_regular_file(f, ec), "{}: no tokenizer.json (pass --tokenizer)", checkpoint.string());
  return f;
}

json added_token_json(int64_t id, const std::string& content) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", true}};
}

json bos_template_json(const std::string& bos, int64_t bos_id) {
  const json bos0 = {{"SpecialToken", {{"id", bos}, {"type_id", 0}}}};
  return {{"type", "TemplateProcessing"},
          {"single", {bos0, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
          {"pair",
           {bos0,
            {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
            {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
            {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
          {"special_tokens", {{bos, {{"id", bos}, {"ids", {bos_id}}, {"tokens", {bos}}}}}}};
}

json bpe_model_json(json vocab, json merges, bool ignore_merges) {
  return {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", nullptr},
          {"continuing_subword_prefix", nullptr},
          {"end_of_word_suffix", nullptr},
          {"fuse_unk", false},
          {"byte_fallback", false},
          {"ignore_merges", ignore_merges},
          {"vocab", std::move(vocab)},
          {"merges", std::move(merges)}};
}

Tokenizer Tokenizer::byte_level(int32_t vocab_size) {
  TL_CHECK(vocab_size >= 258, "Tokenizer::byte_level: vocab_size {} is below 258 (256 bytes + BOS + EOS)",
           vocab_size);
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[bytes_to_unicode(std::string(1, char(b)))] = b;
  json added = json::array();
  for (int32_t id = 256; id < vocab_size; ++id)
    added.push_back(added_token_json(id, id == 256 ? "<|begin_of_text|>"
                                         : id == 257
                                             ? "<|end_of_text|>"
                                             : fmt::format("<|reserved_special_token_{}|>", id - 258)));
  const json doc = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", kLlama3Pattern}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"},
           {"add_prefix_space", false},
           {"trim_offsets", true},
           {"use_regex", false}}}}}},
      {"post_processor", bos_template_json("<|begin_of_text|>", 256)},
      {"decoder",
       {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model", bpe_model_json(vocab, json::array(), true)}};
  return from_json(doc.dump(), "Tokenizer::byte_level");
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special) const {
  check_utf8(text);
  const Impl& im = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 4 + 8);
  if (add_special) out.insert(out.end(), im.prefix.begin(), im.prefix.end());
  Impl::Scratch sc;
  auto sink = [&](std::string_view piece) { im.queue(piece, sc, out); };
  im.split_added(text, [&](std::string_view seg, int32_t id) {
    if (id >= 0) {
      im.flush(sc, out);
      out.push_back(id);
    } else {
      im.run_steps(0, seg, sc, sink);
    }
  });
  im.flush(sc, out);
  if (add_special) out.insert(out.end(), im.suffix.begin(), im.suffix.end());
  return out;
}

std::vector<std::string> Tokenizer::pre_tokenize(std::string_view text) const {
  check_utf8(text);
  const Impl& im = *impl_;
  std::vector<std::string> out;
  Impl::Scratch sc;
  auto sink = [&](std::string_view piece) { out.emplace_back(piece); };
  im.split_added(text, [&](std::string_view seg, int32_t id) {
    if (id >= 0)
      out.emplace_back(seg);
    else
      im.run_steps(0, seg, sc, sink);
  });
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  const Impl& im = *impl_;
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || size_t(id) >= im.tokens.size())
      fail("decode: token id {} is out of range (vocabulary size {})", id, im.tokens.size());
    if (skip_special && (im.flags[size_t(id)] & kSpecial)) continue;
    out.append(im.dec, im.dec_off[size_t(id)], im.dec_off[size_t(id) + 1] - im.dec_off[size_t(id)]);
  }
  return out;
}

int32_t Tokenizer::bos_id() const {
  return impl_->bos;
}
int32_t Tokenizer::eos_id() const {
  return impl_->eos;
}
size_t Tokenizer::vocab_size() const {
  return impl_->tokens.size();
}

const std::string& Tokenizer::token(int32_t id) const {
  if (id < 0 || size_t(id) >= impl_->tokens.size())
    fail("token id {} is out of range (vocabulary size {})", id, impl_->tokens.size());
  return impl_->tokens[size_t(id)];
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
  token(id);  // range check
  const Impl& im = *impl_;
  return std::string_view(im.dec).substr(im.dec_off[size_t(id)],
                                         im.dec_off[size_t(id) + 1] - im.dec_off[size_t(id)]);
}

std::optional<int32_t> Tokenizer::find(std::string_view tok) const {
  const auto it = impl_->by_token.find(std::string(tok));
  if (it == impl_->by_token.end()) return std::nullopt;
  return it->second;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && size_t(id) < impl_->tokens.size() && (impl_->flags[size_t(id)] & kSpecial);
}

const std::vector<std::pair<std::string, std::string>>& Tokenizer::merges() const {
  return impl_->merges;
}

std::string Tokenizer::to_json() const {
  const Impl& im = *impl_;
  // Written by hand around nlohmann's dump so vocab comes out in id order (ordered_json would insert its
  // 128k keys in quadratic time).
  const auto str = [](std::string_view s) { return json(s).dump(); };
  const auto section = [](const json& v) {
    std::string s = v.dump(2);
    std::string out;
    for (char c : s) {  // indent nested lines by one level
      out += c;
      if (c == '\n') out += "  ";
    }
    return out;
  };
  std::string o =
      "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [";
  for (size_t i = 0; i < im.added.size(); ++i) {
    const AddedToken& at = im.added[i];
    o += fmt::format(
        "{}\n    {{\"id\": {}, \"content\": {}, \"single_word\": false, \"lstrip\": false, \"rstrip\": "
        "false, "
        "\"normalized\": {}, \"special\": {}}}",
        i ? "," : "", at.id, str(at.content), at.normalized, at.special);
  }
  o += im.added.empty() ? "],\n" : "\n  ],\n";
  o += "  \"normalizer\": null,\n";
  o += "  \"pre_tokenizer\": " + section(im.pre_tokenizer) + ",\n";
  o += "  \"post_processor\": " + section(im.post_processor) + ",\n";
  o += "  \"decoder\": " + section(im.decoder) + ",\n";
  o += fmt::format(
      "  \"model\": {{\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": {},\n"
      "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n    \"fuse_unk\": "
      "false,\n"
      "    \"byte_fallback\": false,\n    \"ignore_merges\": {},\n    \"vocab\": {{",
      im.unk_token.dump(), im.ignore_merges);
  bool first = true;
  for (size_t id = 0; id < im.tokens.size(); ++id) {
    if (!(im.flags[id] & kInModel)) continue;
    o += first ? "\n      " : ",\n      ";
    o += str(im.tokens[id]) + ": " + std::to_string(id);
    first = false;
  }
  o += first ? "},\n    \"merges\": [" : "\n    },\n    \"merges\": [";
  for (size_t i = 0; i < im.merges.size(); ++i) {
    o += i ? ",\n      " : "\n      ";
    o += str(im.merges[i].first + " " + im.merges[i].second);
  }
  o += im.merges.empty() ? "]\n  }\n}\n" : "\n    ]\n  }\n}\n";
  return o;
}

}  // namespace tl
