#include "formats/gguf_tokenizer.hpp"

#include <nlohmann/json.hpp>

#include <optional>
#include <unordered_set>

#include "core/error.hpp"
#include "core/log.hpp"
#include "formats/gguf_values.hpp"
#include "text/tokenizer_json.hpp"
#include "text/unicode.hpp"

namespace tl {

namespace {

using json = nlohmann::json;

// The one shape of pre-tokenizer that llama.cpp's named BPE pre-tokenizers express: a Split on a regex
// (Isolated, not inverted) followed by ByteLevel with neither a prefix space nor its own regex. Returns the
// regex, or nullopt for any other shape.
std::optional<std::string> split_then_byte_level_regex(const json& pt) {
  if (!pt.is_object() || pt.value("type", "") != "Sequence") return std::nullopt;
  const auto it = pt.find("pretokenizers");
  if (it == pt.end() || !it->is_array() || it->size() != 2) return std::nullopt;
  const json& split = (*it)[0];
  const json& byte_level = (*it)[1];
  if (split.value("type", "") != "Split" || split.value("behavior", "") != "Isolated" ||
      split.value("invert", false) || !split.contains("pattern") || !split["pattern"].is_object())
    return std::nullopt;
  const json& pattern = split["pattern"];
  if (!pattern.contains("Regex") || !pattern["Regex"].is_string()) return std::nullopt;
  // HF's defaults when the keys are absent are true for both.
  const auto flag = [&](const char* key) {
    const auto f = byte_level.find(key);
    return f == byte_level.end() || f->is_null() || (f->is_boolean() && f->get<bool>());
  };
  if (byte_level.value("type", "") != "ByteLevel" || flag("add_prefix_space") || flag("use_regex"))
    return std::nullopt;
  return pattern["Regex"].get<std::string>();
}

// The LLaMA-3 tokenizer.json sections, from the one place the regex is written (Tokenizer::byte_level).
const json& llama3_doc() {
  static const json doc = json::parse(Tokenizer::byte_level(258).to_json());
  return doc;
}
const std::string& llama3_regex() {
  static const std::string regex = *split_then_byte_level_regex(llama3_doc().at("pre_tokenizer"));
  return regex;
}

bool is_bitnet_cpp_arch(std::string_view arch) {
  return arch == "bitnet-b1.58" || arch == "bitnet-25";
}

std::string pad_token(size_t id) {
  return fmt::format("[PAD{}]", id);
}

std::string short_json(const json& v) {
  std::string s = v.dump();
  return s.size() > 160 ? s.substr(0, 157) + "..." : s;
}

}  // namespace

GgufTokenizerMetadata gguf_tokenizer_metadata(const Tokenizer& tok, const BitNetConfig& cfg,
                                              std::string_view chat_template) {
  const json doc = json::parse(tok.to_json());
  const auto regex = split_then_byte_level_regex(doc.at("pre_tokenizer"));
  TL_CHECK(regex && *regex == llama3_regex(),
           "tokenizer: pre-tokenizer {} is not LLaMA-3's (Split on the LLaMA-3 regex, then ByteLevel without "
           "prefix space or regex); llama.cpp picks the regex by the name tokenizer.ggml.pre, and ternlab "
           "exports only the LLaMA-3 one",
           short_json(doc.at("pre_tokenizer")));
  const bool ignore_merges = doc.at("model").value("ignore_merges", false);

  GgufTokenizerMetadata out;
  out.pre = ignore_merges ? "llama-bpe" : "smaug-bpe";
  const size_t n = tok.vocab_size();
  const auto vocab = size_t(cfg.vocab_size);
  TL_CHECK(n <= vocab, "tokenizer: {} tokens, more than the model's vocab_size {}", n, vocab);

  std::vector<int32_t> types(vocab, kTokenTypeNormal);
  for (const json& at : doc.at("added_tokens"))
    types[at.at("id").get<size_t>()] = at.value("special", false) ? kTokenTypeControl : kTokenTypeUserDefined;
  std::vector<std::string> tokens;
  tokens.reserve(vocab);
  for (size_t id = 0; id < n; ++id) tokens.push_back(tok.token(int32_t(id)));
  for (size_t id = n; id < vocab; ++id) {
    std::string pad = pad_token(id);
    TL_CHECK(!tok.find(pad), "tokenizer: padding token {} (for id {}) is already token {}", pad, id,
             *tok.find(pad));
    tokens.push_back(std::move(pad));
    types[id] = kTokenTypeUnused;
  }
  out.padding = vocab - n;
  std::vector<std::string> merges;
  merges.reserve(tok.merges().size());
  for (const auto& [a, b] : tok.merges()) merges.push_back(a + " " + b);

  // What the post-processor adds around a text: GGUF can say "BOS first" and "EOS last", nothing else.
  std::vector<int32_t> extra = tok.encode("", /*add_special=*/true);
  bool add_bos = false, add_eos = false;
  if (!extra.empty() && cfg.bos_token_id >= 0 && extra.front() == cfg.bos_token_id) {
    add_bos = true;
    extra.erase(extra.begin());
  }
  if (!extra.empty() && cfg.eos_token_id >= 0 && extra.back() == cfg.eos_token_id) {
    add_eos = true;
    extra.pop_back();
  }
  TL_CHECK(extra.empty(),
           "tokenizer: its post-processor adds token(s) {} around the text; GGUF can only express BOS first "
           "(bos_token_id {}) and EOS last (eos_token_id {})",
           fmt::join(tok.encode("", true), ", "), cfg.bos_token_id, cfg.eos_token_id);

  auto& kv = out.kv;
  kv.emplace_back("tokenizer.ggml.model", "gpt2");
  kv.emplace_back("tokenizer.ggml.pre", out.pre);
  kv.emplace_back("tokenizer.ggml.tokens", gguf_array(tokens));
  kv.emplace_back("tokenizer.ggml.token_type", gguf_array(types));
  kv.emplace_back("tokenizer.ggml.merges", gguf_array(merges));
  if (cfg.bos_token_id >= 0) kv.emplace_back("tokenizer.ggml.bos_token_id", uint32_t(cfg.bos_token_id));
  if (cfg.eos_token_id >= 0) kv.emplace_back("tokenizer.ggml.eos_token_id", uint32_t(cfg.eos_token_id));
  if (cfg.pad_token_id >= 0) kv.emplace_back("tokenizer.ggml.padding_token_id", uint32_t(cfg.pad_token_id));
  kv.emplace_back("tokenizer.ggml.add_bos_token", add_bos);
  kv.emplace_back("tokenizer.ggml.add_eos_token", add_eos);
  if (!chat_template.empty()) kv.emplace_back("tokenizer.chat_template", std::string(chat_template));
  return out;
}

GgufTokenizer tokenizer_from_gguf(const GgufFile& f, std::string_view arch, std::string_view pre_override) {
  const std::string& what = f.what();
  const std::string model = f.get<std::string>("tokenizer.ggml.model");
  TL_CHECK(model == "gpt2", "{}: tokenizer.ggml.model is '{}'; only 'gpt2' (byte-level BPE) is supported",
           what, model);
  const std::string pre = gguf_string(f, "tokenizer.ggml.pre").value_or("");
  std::string pre_used = !pre_override.empty() ? std::string(pre_override) : pre;
  if (pre_used.empty()) {
    TL_CHECK(is_bitnet_cpp_arch(arch),
             "{}: no tokenizer.ggml.pre: llama.cpp would split text with its 'default' regex, which ternlab "
             "does not implement; pass the pre-tokenizer name (e.g. llama-bpe) to use instead",
             what);
    pre_used = "llama-bpe";
    log_info("{}: no tokenizer.ggml.pre (as in Microsoft's {} files): using the LLaMA-3 pre-tokenizer", what,
             arch);
  }
  bool ignore_merges = false;
  if (pre_used == "llama-bpe" || pre_used == "llama3" || pre_used == "llama-v3") {
    ignore_merges = true;
  } else if (pre_used != "smaug-bpe" && pre_used != "dbrx") {
    fail(
        "{}: tokenizer.ggml.pre '{}' is not supported: ternlab implements the LLaMA-3 pre-tokenizer "
        "(llama-bpe, llama3, llama-v3; smaug-bpe, dbrx without ignore_merges)",
        what, pre_used);
  }

  const GgufArray& tokens = f.get_array("tokenizer.ggml.tokens", GgufType::String);
  const size_t n = tokens.items.size();
  TL_CHECK(n > 0, "{}: tokenizer.ggml.tokens is empty", what);
  std::vector<int32_t> types(n, kTokenTypeNormal);
  if (f.contains("tokenizer.ggml.token_type")) {
    const GgufArray& t = f.get_array("tokenizer.ggml.token_type", GgufType::I32);
    TL_CHECK(t.items.size() == n, "{}: tokenizer.ggml.token_type has {} entries, tokenizer.ggml.tokens {}",
             what, t.items.size(), n);
    for (size_t i = 0; i < n; ++i) {
      types[i] = *t.items[i].get_if<int32_t>();
      TL_CHECK(types[i] >= kTokenTypeNormal && types[i] <= kTokenTypeByte,
               "{}: tokenizer.ggml.token_type[{}] is {}, expected 1..6", what, i, types[i]);
    }
  }
  const auto token_at = [&](size_t i) -> const std::string& {
    return *tokens.items[i].get_if<std::string>();
  };

  size_t keep = n;
  while (keep > 0 && types[keep - 1] == kTokenTypeUnused && token_at(keep - 1) == pad_token(keep - 1)) --keep;

  const auto id_key = [&](const char* key) -> int64_t {
    const auto id = gguf_int(f, key);
    if (!id) return -1;
    TL_CHECK(*id >= 0 && size_t(*id) < n, "{}: {} = {} is not a token id (the vocabulary has {} tokens)",
             what, key, *id, n);
    return *id;
  };
  const int64_t bos_id = id_key("tokenizer.ggml.bos_token_id");
  const int64_t eos_id = id_key("tokenizer.ggml.eos_token_id");
  const int64_t pad_id = id_key("tokenizer.ggml.padding_token_id");
  const bool add_bos = f.get_or<bool>("tokenizer.ggml.add_bos_token", ignore_merges);
  const bool add_eos = f.get_or<bool>("tokenizer.ggml.add_eos_token", false);
  for (const auto& [flag, id, name] : {std::tuple{add_bos, bos_id, "bos"}, {add_eos, eos_id, "eos"}}) {
    if (!flag) continue;
    TL_CHECK(id >= 0, "{}: tokenizer.ggml.add_{}_token is true but there is no tokenizer.ggml.{}_token_id",
             what, name, name);
    TL_CHECK(size_t(id) < keep, "{}: tokenizer.ggml.{}_token_id {} is a padding token", what, name, id);
  }

  json vocab = json::object();
  json added = json::array();
  for (size_t id = 0; id < keep; ++id) {
    const std::string& s = token_at(id);
    TL_CHECK(!s.empty(), "{}: tokenizer.ggml.tokens[{}] is empty", what, id);
    TL_CHECK(utf8_invalid_at(s) == std::string::npos,
             "{}: tokenizer.ggml.tokens[{}] is not valid UTF-8 (byte {})", what, id, utf8_invalid_at(s));
    if (types[id] == kTokenTypeNormal || types[id] == kTokenTypeByte) {
      TL_CHECK(!vocab.contains(s), "{}: tokenizer.ggml.tokens[{}] {} repeats token {}", what, id,
               json(s).dump(), vocab[s].get<size_t>());
      vocab[s] = id;
    } else {
      json at = added_token_json(int64_t(id), s);
      at["special"] = types[id] != kTokenTypeUserDefined;
      added.push_back(std::move(at));
    }
  }
  json merges = json::array();
  const auto& merge_items = f.get_array("tokenizer.ggml.merges", GgufType::String).items;
  for (size_t i = 0; i < merge_items.size(); ++i) {
    const std::string& m = *merge_items[i].get_if<std::string>();
    TL_CHECK(utf8_invalid_at(m) == std::string::npos,
             "{}: tokenizer.ggml.merges[{}] is not valid UTF-8 (byte {})", what, i, utf8_invalid_at(m));
    merges.push_back(m);
  }

  json post = nullptr;
  if (add_bos && !add_eos) {
    post = bos_template_json(token_at(size_t(bos_id)), bos_id);
  } else if (add_bos || add_eos) {
    json single = json::array(), pair = json::array(), specials = json::object();
    const auto special = [&](int64_t id, int type_id) {
      const std::string& s = token_at(size_t(id));
      specials[s] = {{"id", s}, {"ids", {id}}, {"tokens", {s}}};
      return json{{"SpecialToken", {{"id", s}, {"type_id", type_id}}}};
    };
    for (int seq = 0; seq < 2; ++seq) {
      json& list = seq == 0 ? single : pair;
      for (int part = 0; part <= seq; ++part) {
        if (add_bos) list.push_back(special(bos_id, part));
        list.push_back({{"Sequence", {{"id", part == 0 ? "A" : "B"}, {"type_id", part}}}});
        if (add_eos) list.push_back(special(eos_id, part));
      }
    }
    post = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
  }
  const json doc = {{"version", "1.0"},
                    {"truncation", nullptr},
                    {"padding", nullptr},
                    {"added_tokens", added},
                    {"normalizer", nullptr},
                    {"pre_tokenizer", llama3_doc().at("pre_tokenizer")},
                    {"post_processor", post},
                    {"decoder", llama3_doc().at("decoder")},
                    {"model", bpe_model_json(vocab, merges, ignore_merges)}};
  return {Tokenizer::from_json(doc.dump(), what + " (tokenizer metadata)"),
          pre,
          pre_used,
          n - keep,
          n,
          bos_id,
          eos_id,
          pad_id,
          gguf_string(f, "tokenizer.chat_template").value_or("")};
}

}  // namespace tl
