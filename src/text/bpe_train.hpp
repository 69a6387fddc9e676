// Byte-level BPE training that writes a standard Hugging Face tokenizer.json (see docs/tokenizer.md).
//
// Pre-tokenization is tl::Tokenizer's own (the LLaMA-3 Split regex, added tokens matched first), so the
// pieces that training counts are exactly the pieces that encoding later feeds to BPE. Training is the
// algorithm of HF tokenizers' BpeTrainer: count the pre-tokens, start from the 256 byte tokens, and
// repeatedly merge the most frequent adjacent pair, keeping pair counts up to date incrementally (an index
// from each pair to the words holding it, and a max-heap with lazy deletion of stale counts).
//
// Ids: 0..255 are the byte tokens in GPT-2 order, i.e. sorted by their byte-to-unicode character: the 188
// printable bytes first ('!' = 0, 'a' = 64, 'ÿ' = 187), then the 68 remapped ones in byte order (0x00 = Ā
// = 188, space = Ġ = 220, 0xAD = Ń = 255), as in GPT-2 and LLaMA 3. Merge r creates id 256 + r; the special
// tokens follow the BPE vocabulary.
//
// Tie rule: among pairs with the highest count, the one with the smallest (left id, right id) wins, left
// id first; so among byte tokens the one whose character sorts first, and a byte before any merged token,
// an older merged token before a newer one. That is HF's rule (its ids are ordered the same way), so the
// merges equal those of HF's BpeTrainer on the same pre-tokens (tested on Brown: all 29,915).
//
// Guard: a pair whose concatenation is already a token would be skipped, not merged (HF would add a second
// merge making the same token). That keeps one merge per token, which is what makes encoding the training
// words reproduce training's segmentation exactly. It has not been seen to happen (Brown up to 30k merges,
// random small corpora); skipped pairs are counted in BpeTrainResult::skipped_pairs.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/corpus.hpp"

namespace tl {

class Tokenizer;

struct BpeTrainOptions {
  int64_t vocab_size = 4096;   // total, special tokens included; at least 256 + special_tokens.size()
  uint64_t min_frequency = 2;  // a pair is merged only if it occurs at least this often (0 acts as 1)
  // Added after the BPE vocabulary, in this order. The first one is BOS: the post-processor prepends it.
  std::vector<std::string> special_tokens = {"<|begin_of_text|>", "<|end_of_text|>"};
  bool keep_words = false;  // fill BpeTrainResult::words (for tests and diagnostics)
};

enum class BpeStop { VocabSize, MinFrequency, NoPairs };
std::string_view bpe_stop_name(BpeStop s);  // "vocab_size" | "min_frequency" | "no_pairs"

// A distinct pre-token of the training text and its segmentation when training stopped.
struct BpeWord {
  std::string bytes;         // raw bytes (before the byte map)
  uint64_t count = 0;        // occurrences in the training text
  std::vector<int32_t> ids;  // final BPE tokens
};

struct BpeTrainResult {
  std::vector<std::string> tokens;                  // raw bytes of BPE token id i
  std::vector<std::pair<int32_t, int32_t>> merges;  // rank r joins (left, right) into id 256 + r
  std::vector<uint64_t> merge_counts;               // the pair's count when it was merged
  std::vector<std::string> special_tokens;          // id tokens.size() + k
  BpeStop stop = BpeStop::VocabSize;
  size_t documents = 0, text_bytes = 0;
  uint64_t words = 0;        // pre-tokens counted (special tokens in the text are not counted)
  size_t unique_words = 0;   // distinct pre-tokens
  size_t skipped_pairs = 0;  // pairs not merged because their concatenation was already a token
  double seconds_count = 0, seconds_merge = 0;
  std::vector<BpeWord> words_kept;  // with keep_words, sorted by bytes

  size_t vocab_size() const { return tokens.size() + special_tokens.size(); }
  // The tokenizer.json: BPE (vocab + merges, ignore_merges false), pre-tokenizer and decoder as in
  // LLaMA 3 (Split regex, ByteLevel without its own regex), the special tokens as added tokens, and a
  // TemplateProcessing that prepends the first special token (none without special tokens).
  std::string to_json() const;
  Tokenizer tokenizer() const;  // Tokenizer::from_json(to_json())
};

// Token id of each byte (GPT-2 order) and its inverse.
const std::array<int32_t, 256>& bpe_byte_ids();
const std::array<uint8_t, 256>& bpe_id_bytes();

// Distinct pre-tokens of the documents (raw bytes) with their counts, sorted by bytes. Added tokens are
// `special_tokens` (matched first, not counted). Throws tl::Error naming the document on invalid UTF-8.
std::vector<std::pair<std::string, uint64_t>> count_pretokens(std::span<const std::string> docs,
                                                              std::span<const std::string> special_tokens);

// Trains on documents; throws tl::Error on bad options or when the text holds no pre-token.
BpeTrainResult train_bpe(std::span<const std::string> docs, const BpeTrainOptions& opt);
BpeTrainResult train_bpe(std::span<const Document> docs, const BpeTrainOptions& opt);
// Trains on counted pre-tokens (raw bytes, as count_pretokens gives them; any order, no duplicates).
BpeTrainResult train_bpe_words(std::vector<std::pair<std::string, uint64_t>> words,
                               const BpeTrainOptions& opt);

// How well a tokenizer compresses text: documents encoded one by one, without special tokens.
struct Compression {
  size_t documents = 0, bytes = 0, tokens = 0;
  size_t words = 0;  // whitespace-separated words (Python str.split())
  double tokens_per_word() const { return words ? double(tokens) / double(words) : 0.0; }
  double bytes_per_token() const { return tokens ? double(bytes) / double(tokens) : 0.0; }
};
Compression measure_compression(const Tokenizer& tok, std::span<const std::string> docs);

}  // namespace tl
