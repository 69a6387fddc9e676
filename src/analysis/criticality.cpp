#include "analysis/criticality.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "text/corpus.hpp"

namespace tl {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------------------
// Analysis texts

std::vector<std::string> analysis_rows(const std::string& corpus, const fs::path& input,
                                       const std::string& split) {
  const CorpusKind kind = parse_corpus_kind(corpus);
  std::error_code ec;
  switch (kind) {
    case CorpusKind::Brown: {
      const fs::path dir = input.empty() ? find_brown_dir() : input;
      return wikitext_rows(to_wikitext(load_brown(dir, parse_split(split))));
    }
    case CorpusKind::WikiText: {
      TL_CHECK(!input.empty(),
               "criticality: --corpus wikitext needs --input (a wiki.*.raw file or directory)");
      if (fs::is_directory(input, ec))
        return read_wikitext_rows(input / wikitext_file_name(parse_split(split)));
      return read_wikitext_rows(input);
    }
    case CorpusKind::Text:
    case CorpusKind::Jsonl: {
      TL_CHECK(!input.empty(), "criticality: --corpus {} needs --input", corpus);
      const auto docs = kind == CorpusKind::Text ? read_text_documents(input, true) : read_jsonl(input);
      std::vector<std::string> rows;
      rows.reserve(docs.size());
      for (const auto& d : docs) rows.push_back(d.text);
      return rows;
    }
    case CorpusKind::Sotu:
    case CorpusKind::MobyDick:
    case CorpusKind::Kjv: {
      // The seed preparation's rows; a single sotu / moby-dick file is one document with no split.
      CorpusSpec spec{kind, parse_split(split), true, input};
      if (kind != CorpusKind::Kjv && fs::is_regular_file(input, ec)) spec.split_given = false;
      std::vector<std::string> rows;
      for (const auto& d : load_corpus(spec))
        for (auto& r : document_rows(kind, d)) rows.push_back(std::move(r));
      return rows;
    }
  }
  fail("criticality: unknown corpus '{}'", corpus);
}

std::vector<std::string> select_analysis_texts(const std::vector<std::string>& rows, int n, int chars,
                                               int min_chars) {
  TL_CHECK(n >= 1, "criticality: --texts must be at least 1, found {}", n);
  TL_CHECK(chars >= 1, "criticality: --chars must be at least 1, found {}", chars);
  std::vector<std::string> out;
  for (const auto& row : rows) {
    if (int(out.size()) >= n) break;
    require_utf8(row, "criticality: analysis row");
    const std::string_view t = python_strip(row);
    if (utf8_length(t) <= size_t(min_chars)) continue;  // the study keeps len(t) > 100
    // t[:chars]: the first `chars` code points (UTF-8 continuation bytes are 10xxxxxx)
    size_t end = 0;
    for (int cp = 0; cp < chars && end < t.size(); ++cp) {
      ++end;
      while (end < t.size() && (static_cast<unsigned char>(t[end]) & 0xC0) == 0x80) ++end;
    }
    out.emplace_back(t.substr(0, end));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Building blocks

namespace {

// Calls the installed hooks (if any), then the runner's after_block from on_block.
struct ChainedBlockHook : ResidualHooks {
  ResidualHooks* inner = nullptr;
  const BlockRunner::AfterBlock* after_block = nullptr;
  bool stopped = false;
  explicit ChainedBlockHook(ResidualHooks* installed) : inner(installed) {
    attention = inner && inner->attention;
    mlp = inner && inner->mlp;
    block = true;
  }
  void on_attention(const HookSite& site, float* o) override { inner->on_attention(site, o); }
  void on_mlp(const HookSite& site, float* o) override { inner->on_mlp(site, o); }
  void on_block(const HookSite& site, const float* x_in, float* x_out) override {
    if (inner && inner->block) inner->on_block(site, x_in, x_out);
    if (!stopped) stopped = !(*after_block)(site.layer, x_out);
  }
};

}  // namespace

CpuBlockRunner::CpuBlockRunner(const Model& model)
    : owned_(std::make_unique<CpuModel>(model)), cpu_(owned_.get()) {}

void CpuBlockRunner::run_blocks(const float* x, int64_t T, const AfterBlock& after_block) {
  ResidualHooks* const installed = cpu_->hooks();
  ChainedBlockHook hook(installed);
  hook.after_block = &after_block;
  cpu_->set_hooks(&hook);
  std::vector<float> hidden;  // (T,C) after the final norm: not part of the measurements
  try {
    cpu_->forward_embeddings(x, 1, T, hidden);
  } catch (...) {
    cpu_->set_hooks(installed);
    throw;
  }
  cpu_->set_hooks(installed);
}

void hidden_states_from_embeddings(BlockRunner& runner, const float* x, int64_t T, std::vector<float>& h) {
  const int64_t L = runner.config().num_hidden_layers, C = runner.config().hidden_size;
  TL_CHECK(T >= 1, "criticality: a sequence needs at least 1 token, found T = {}", T);
  const size_t n = size_t(T * C);
  h.resize(size_t(L + 1) * n);
  std::memcpy(h.data(), x, n * sizeof(float));
  runner.run_blocks(x, T, [&](int64_t l, float* out) {
    std::memcpy(h.data() + size_t(l + 1) * n, out, n * sizeof(float));
    return true;
  });
}

void hidden_states_from_embeddings(CpuModel& model, const float* x, int64_t T, std::vector<float>& h) {
  CpuBlockRunner runner(model);
  hidden_states_from_embeddings(runner, x, T, h);
}

namespace {

// x (T,C) = rows tokens of table (V,C).
std::vector<float> embedding_lookup(const float* table, int64_t V, int64_t C,
                                    std::span<const int32_t> tokens) {
  std::vector<float> x(tokens.size() * size_t(C));
  for (size_t t = 0; t < tokens.size(); ++t) {
    TL_CHECK(tokens[t] >= 0 && tokens[t] < V, "criticality: token {} at index {} is outside [0, {})",
             tokens[t], t, V);
    std::memcpy(x.data() + t * size_t(C), table + int64_t(tokens[t]) * C, size_t(C) * sizeof(float));
  }
  return x;
}

}  // namespace

std::vector<float> embed(const BlockRunner& runner, std::span<const int32_t> tokens) {
  return embedding_lookup(runner.embedding_rows(), runner.config().vocab_size, runner.config().hidden_size,
                          tokens);
}

std::vector<float> embed(const CpuModel& model, std::span<const int32_t> tokens) {
  return embedding_lookup(model.embedding_rows(), model.config().vocab_size, model.config().hidden_size,
                          tokens);
}

double relative_perturbation(const float* a, const float* b, size_t n) {
  double dd = 0, aa = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = double(b[i]) - double(a[i]);
    dd += d * d;
    aa += double(a[i]) * double(a[i]);
  }
  return std::sqrt(dd) / (std::sqrt(aa) + kNormEps);
}

double relative_perturbation(const float* a, const float* b, int64_t T, int64_t C, const uint8_t* keep) {
  if (!keep) return relative_perturbation(a, b, size_t(T * C));
  double dd = 0, aa = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (!keep[t]) continue;
    for (int64_t c = t * C; c < (t + 1) * C; ++c) {
      const double d = double(b[c]) - double(a[c]);
      dd += d * d;
      aa += double(a[c]) * double(a[c]);
    }
  }
  return std::sqrt(dd) / (std::sqrt(aa) + kNormEps);
}

BlockStats block_stats(const float* h, int64_t L, int64_t T, int64_t C, const uint8_t* keep) {
  BlockStats s;
  int64_t kept = 0;
  for (int64_t t = 0; t < T; ++t) kept += !keep || keep[t];
  TL_CHECK(kept > 0, "criticality: every token of a text is excluded");
  for (int64_t l = 0; l < L; ++l) {
    const float* xin = h + l * T * C;         // (T,C) entering block l
    const float* xout = h + (l + 1) * T * C;  // (T,C) leaving block l
    double in = 0, out = 0, corr = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (keep && !keep[t]) continue;
      double ii = 0, oo = 0, cc = 0;
      for (int64_t c = 0; c < C; ++c) {
        const double a = xin[t * C + c], b = xout[t * C + c];
        ii += a * a;
        oo += b * b;
        cc += (b - a) * (b - a);
      }
      in += std::sqrt(ii);
      out += std::sqrt(oo);
      corr += std::sqrt(cc);
    }
    in /= double(kept);
    out /= double(kept);
    corr /= double(kept);
    s.in_norm.push_back(in);
    s.out_norm.push_back(out);
    s.corr_norm.push_back(corr);
    s.br.push_back(out / (in + kNormEps));
    s.cr.push_back(corr / (in + kNormEps));
  }
  return s;
}

std::vector<uint8_t> measurement_mask(std::span<const int32_t> tokens, const float* h, int64_t L, int64_t C,
                                      bool exclude_bos, int32_t bos_id, double outlier_factor) {
  const int64_t T = int64_t(tokens.size());
  std::vector<uint8_t> keep(size_t(T), 1);
  if (exclude_bos)
    for (int64_t t = 0; t < T; ++t)
      if (tokens[size_t(t)] == bos_id) keep[size_t(t)] = 0;
  if (outlier_factor > 0) {
    std::vector<double> norms(static_cast<size_t>(T));
    for (int64_t l = 0; l <= L; ++l) {  // depth 0 = embeddings, l > 0 = block l-1's output
      const float* x = h + l * T * C;
      for (int64_t t = 0; t < T; ++t) {
        double ss = 0;
        for (int64_t c = 0; c < C; ++c) ss += double(x[t * C + c]) * x[t * C + c];
        norms[size_t(t)] = std::sqrt(ss);
      }
      const double limit = outlier_factor * percentile(norms, 50);
      for (int64_t t = 0; t < T; ++t)
        if (norms[size_t(t)] > limit) keep[size_t(t)] = 0;
    }
  }
  return keep;
}

Profile perturbation_profile(const float* h_clean, const float* h_pert, int64_t L, int64_t T, int64_t C,
                             const uint8_t* keep) {
  Profile p;
  const size_t n = size_t(T * C);
  p.delta_in = relative_perturbation(h_clean, h_pert, T, C, keep);
  for (int64_t l = 0; l < L; ++l)
    p.delta.push_back(relative_perturbation(h_clean + (l + 1) * n, h_pert + (l + 1) * n, T, C, keep));
  return p;
}

namespace {

// ‖x‖_F over the kept rows of (T,C), in double.
double kept_norm(const float* x, int64_t T, int64_t C, const uint8_t* keep) {
  double ss = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (keep && !keep[t]) continue;
    for (int64_t c = t * C; c < (t + 1) * C; ++c) ss += double(x[c]) * x[c];
  }
  return std::sqrt(ss);
}

}  // namespace

FtleProfile ftle_profile(BlockRunner& runner, const float* x, int64_t T, const float* h,
                         const float* direction, double eps_rel, const uint8_t* keep) {
  const int64_t C = runner.config().hidden_size, n = T * C;
  TL_CHECK(T >= 1, "criticality: a sequence needs at least 1 token, found T = {}", T);
  TL_CHECK(eps_rel > 0 && eps_rel < 1, "criticality: the FTLE's relative ε must be in (0, 1), found {}",
           eps_rel);
  FtleProfile p;
  const double xn = kept_norm(x, T, C, keep), dn = kept_norm(direction, T, C, keep);
  TL_CHECK(xn > 0 && dn > 0, "criticality: FTLE needs non-zero embeddings and direction");
  std::vector<float> xp(static_cast<size_t>(n));
  const double scale = eps_rel * xn / dn;  // relative size eps_rel at the embeddings
  for (size_t i = 0; i < xp.size(); ++i) xp[i] = x[i] + float(scale * direction[i]);
  // After every block: measure the deviation from the clean stream, then rescale it to relative size eps.
  std::vector<float> dev(static_cast<size_t>(n));
  runner.run_blocks(xp.data(), T, [&](int64_t l, float* x_out) {
    const float* clean = h + (l + 1) * n;  // (T,C) block l's clean output
    for (int64_t i = 0; i < n; ++i) dev[size_t(i)] = x_out[i] - clean[i];
    const double d = kept_norm(dev.data(), T, C, keep), ref = kept_norm(clean, T, C, keep);
    if (!(d > 0) || !(ref > 0)) {  // no code flipped: the perturbation is gone, nothing left to follow
      p.vanished_at = l;
      return false;
    }
    p.g.push_back(std::log(d / (eps_rel * ref)));
    const double rescale = eps_rel * ref / d;
    for (int64_t i = 0; i < n; ++i) x_out[i] = clean[i] + float(rescale * dev[size_t(i)]);
    return true;
  });
  return p;
}

FtleProfile ftle_profile(CpuModel& model, const float* x, int64_t T, const float* h, const float* direction,
                         double eps_rel, const uint8_t* keep) {
  CpuBlockRunner runner(model);
  return ftle_profile(runner, x, T, h, direction, eps_rel, keep);
}

uint64_t noise_seed(uint64_t seed, int64_t seed_index, int64_t text_index) {
  // splitmix64-style mixing of the three numbers: distinct streams for every (seed, s, text)
  uint64_t z = seed * 0x9e3779b97f4a7c15ull ^ (uint64_t(seed_index) + 1) * 0xbf58476d1ce4e5b9ull ^
               (uint64_t(text_index) + 1) * 0x94d049bb133111ebull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::vector<float> gaussian_noise(uint64_t seed, size_t n) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = float(rng.normal());
  return v;
}

double study_lambda(const std::vector<double>& D) {
  TL_CHECK(D.size() >= 2, "criticality: λ needs at least 2 layers, found {}", D.size());
  return (std::log(D.back() + kLogEps) - std::log(D.front() + kLogEps)) / double(D.size() - 1);
}

double study_amplification(const std::vector<double>& D) {
  TL_CHECK(!D.empty(), "criticality: amplification needs at least 1 layer");
  return D.back() / (D.front() + kLogEps);
}

std::string br_label(double avg_br) {
  if (std::abs(avg_br - 1) < 0.1) return "CRITICAL";
  return avg_br < 1 ? "SUBCRITICAL" : "SUPERCRITICAL";
}

std::string lambda_label(double lambda) {
  if (std::abs(lambda) < 0.05) return "CRITICAL";
  return lambda < 0 ? "SUBCRITICAL" : "SUPERCRITICAL";
}

std::string soc_verdict(double avg_br, double lambda) {
  const int ok = int(std::abs(avg_br - 1) < 0.1) + int(std::abs(lambda) < 0.05);
  return ok == 2 ? "VALIDATED" : ok == 1 ? "PARTIAL" : "NOT CONFIRMED";
}

double percentile(std::vector<double> v, double q) {
  TL_CHECK(!v.empty(), "percentile of an empty sample");
  std::sort(v.begin(), v.end());
  const double pos = q / 100.0 * double(v.size() - 1);
  const size_t i = size_t(std::floor(pos));
  if (i + 1 >= v.size()) return v.back();
  const double f = pos - double(i);
  return v[i] + f * (v[i + 1] - v[i]);
}

// ---------------------------------------------------------------------------------------------------------
// Aggregates

void validate(const CriticalityOptions& opt) {
  TL_CHECK(!opt.eps.empty(), "criticality: no ε given");
  for (double e : opt.eps)
    TL_CHECK(std::isfinite(e) && e > 0, "criticality: every ε must be finite and > 0, found {}", e);
  TL_CHECK(opt.seeds >= 1, "criticality: --seeds must be at least 1, found {}", opt.seeds);
  TL_CHECK(std::isfinite(opt.study_eps) && opt.study_eps > 0,
           "criticality: the study's ε must be > 0, found {}", opt.study_eps);
  TL_CHECK(opt.bootstrap >= 0, "criticality: bootstrap resamples must be >= 0, found {}", opt.bootstrap);
  for (double e : opt.ftle_eps)
    TL_CHECK(std::isfinite(e) && e > 0 && e < 1,
             "criticality: every FTLE ε is a relative size in (0, 1), found {}", e);
  TL_CHECK(std::isfinite(opt.outlier_factor) && (opt.outlier_factor == 0 || opt.outlier_factor > 1),
           "criticality: the outlier factor must be > 1 (0: off), found {}", opt.outlier_factor);
  TL_CHECK(!opt.exclude_bos || opt.bos_id >= 0,
           "criticality: BOS exclusion asked for, but the tokenizer has no BOS token");
}

StudySummary study_summary(const std::vector<BlockStats>& clean, const std::vector<Profile>& pert) {
  TL_CHECK(!clean.empty() && clean.size() == pert.size(), "criticality: {} clean and {} perturbed texts",
           clean.size(), pert.size());
  const size_t L = clean[0].br.size(), n = clean.size();
  StudySummary s;
  auto mean_of = [&](auto field) {
    std::vector<double> m(L, 0.0);
    for (const auto& c : clean)
      for (size_t l = 0; l < L; ++l) m[l] += (c.*field)[l];
    for (auto& x : m) x /= double(n);
    return m;
  };
  s.in_norm = mean_of(&BlockStats::in_norm);
  s.out_norm = mean_of(&BlockStats::out_norm);
  s.corr_norm = mean_of(&BlockStats::corr_norm);
  s.br = mean_of(&BlockStats::br);
  s.cr = mean_of(&BlockStats::cr);
  s.D.assign(L, 0.0);
  for (const auto& p : pert) {
    for (size_t l = 0; l < L; ++l) s.D[l] += p.delta[l];
    s.D_in += p.delta_in;
  }
  for (auto& x : s.D) x /= double(n);
  s.D_in /= double(n);

  double sum = 0;
  for (double b : s.br) sum += b;
  s.avg_br = sum / double(L);
  double ss = 0;
  for (double b : s.br) ss += (b - s.avg_br) * (b - s.avg_br);
  s.std_br = std::sqrt(ss / double(L));  // population (numpy's default)
  const auto [mn, mx] = std::minmax_element(s.br.begin(), s.br.end());
  s.min_br = *mn;
  s.max_br = *mx;
  s.min_br_layer = mn - s.br.begin();
  s.max_br_layer = mx - s.br.begin();
  for (double b : s.br) s.layers_in_band += (b >= 0.95 && b <= 1.05);
  s.lambda = study_lambda(s.D);
  s.amplification = study_amplification(s.D);
  s.br_label = br_label(s.avg_br);
  s.lambda_label = lambda_label(s.lambda);
  s.verdict = soc_verdict(s.avg_br, s.lambda);
  return s;
}

SampleStats sample_stats(const std::vector<double>& v, int64_t excluded, int bootstrap, uint64_t seed) {
  SampleStats s;
  s.n = int64_t(v.size());
  s.excluded = excluded;
  if (v.empty()) {
    s.median = s.p025 = s.p975 = s.ci_lo = s.ci_hi = std::nan("");
    return s;
  }
  s.median = percentile(v, 50);
  s.p025 = percentile(v, 2.5);
  s.p975 = percentile(v, 97.5);
  s.ci_lo = s.ci_hi = s.median;
  if (bootstrap > 0 && v.size() > 1) {  // percentile bootstrap of the median
    Rng rng(seed);
    std::vector<double> meds(static_cast<size_t>(bootstrap));
    std::vector<double> r(v.size());
    for (auto& m : meds) {
      for (auto& x : r) x = v[rng.below(v.size())];
      m = percentile(r, 50);
    }
    s.ci_lo = percentile(meds, 2.5);
    s.ci_hi = percentile(meds, 97.5);
  }
  return s;
}

CriticalityResult run_criticality(CpuModel& model, const std::vector<std::vector<int32_t>>& texts,
                                  const CriticalityOptions& opt) {
  CpuBlockRunner runner(model);
  return run_criticality(runner, texts, opt);
}

CriticalityResult run_criticality(BlockRunner& runner, const std::vector<std::vector<int32_t>>& texts,
                                  const CriticalityOptions& opt) {
  validate(opt);
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t L = runner.config().num_hidden_layers, C = runner.config().hidden_size;
  TL_CHECK(L >= 2, "criticality: λ needs at least 2 layers, the model has {}", L);
  TL_CHECK(!texts.empty(), "criticality: no analysis texts");
  CriticalityResult r;
  r.layers = L;
  r.hidden = C;
  r.options = opt;
  const size_t E = opt.eps.size(), S = size_t(opt.seeds), F = opt.ftle_eps.size();
  // the study's view reuses the sweep's seed-0 run when its ε is in the sweep
  const auto study_it = std::find(opt.eps.begin(), opt.eps.end(), opt.study_eps);
  std::vector<BlockStats> clean_stats;
  std::vector<Profile> study_profiles;
  std::vector<std::vector<Profile>> prof(E);      // [ε][text * S + s]
  std::vector<std::vector<FtleProfile>> ftle(F);  // [ε_rel][text * S + s]
  std::vector<float> h, hp, xp;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto& tok = texts[i];
    TL_CHECK(!tok.empty(), "criticality: analysis text {} has no tokens", i);
    const int64_t T = int64_t(tok.size());
    r.text_tokens.push_back(T);
    const std::vector<float> x = embed(runner, tok);  // (T,C)
    hidden_states_from_embeddings(runner, x.data(), T, h);
    const bool masked = opt.exclude_bos || opt.outlier_factor > 0;
    const std::vector<uint8_t> keep_v =
        masked ? measurement_mask(tok, h.data(), L, C, opt.exclude_bos, opt.bos_id, opt.outlier_factor)
               : std::vector<uint8_t>();
    const uint8_t* keep = masked ? keep_v.data() : nullptr;
    r.text_excluded.push_back(masked ? int64_t(std::count(keep_v.begin(), keep_v.end(), 0)) : 0);
    TL_CHECK(r.text_excluded.back() < T,
             "criticality: every token of analysis text {} is excluded (BOS / outlier rules)", i);
    clean_stats.push_back(block_stats(h.data(), L, T, C, keep));
    xp.resize(x.size());
    auto perturbed = [&](const std::vector<float>& noise, double eps) {
      const float e = float(eps);
      for (size_t k = 0; k < x.size(); ++k) xp[k] = x[k] + e * noise[k];  // emb + ε·noise, fp32
      hidden_states_from_embeddings(runner, xp.data(), T, hp);
      return perturbation_profile(h.data(), hp.data(), L, T, C, keep);
    };
    for (size_t s = 0; s < S; ++s) {
      const std::vector<float> noise = gaussian_noise(noise_seed(opt.seed, int64_t(s), int64_t(i)), x.size());
      for (size_t e = 0; e < E; ++e) prof[e].push_back(perturbed(noise, opt.eps[e]));
      if (s == 0) {
        if (study_it != opt.eps.end())
          study_profiles.push_back(prof[size_t(study_it - opt.eps.begin())].back());
        else
          study_profiles.push_back(perturbed(noise, opt.study_eps));
      }
      for (size_t f = 0; f < F; ++f)  // the same draw as a direction
        ftle[f].push_back(ftle_profile(runner, x.data(), T, h.data(), noise.data(), opt.ftle_eps[f], keep));
    }
  }
  r.study = study_summary(clean_stats, study_profiles);

  for (size_t e = 0; e < E; ++e) {
    EpsResult er;
    er.eps = opt.eps[e];
    er.D.assign(size_t(L), 0.0);
    for (const auto& p : prof[e]) {
      for (int64_t l = 0; l < L; ++l) er.D[size_t(l)] += p.delta[size_t(l)];
      er.D_in += p.delta_in;
      er.delta_first.push_back(p.delta.front());
      er.delta_last.push_back(p.delta.back());
    }
    for (auto& d : er.D) d /= double(prof[e].size());
    er.D_in /= double(prof[e].size());
    er.lambda = study_lambda(er.D);
    er.amplification = study_amplification(er.D);
    for (int64_t l = 0; l < L; ++l) {
      std::vector<double> g;
      int64_t excluded = 0;
      for (const auto& p : prof[e]) {
        const double a = l == 0 ? p.delta_in : p.delta[size_t(l - 1)], b = p.delta[size_t(l)];
        if (a > 0 && b > 0)
          g.push_back(std::log(b / a));
        else
          ++excluded;  // log(0): the perturbation vanished in fp32
      }
      er.growth.push_back(
          sample_stats(g, excluded, opt.bootstrap, noise_seed(opt.seed ^ 0xb007, int64_t(e), l)));
    }
    std::vector<double> lam;
    for (const auto& p : prof[e]) lam.push_back(study_lambda(p.delta));
    er.lambda_samples = sample_stats(lam, 0, opt.bootstrap, noise_seed(opt.seed ^ 0x1a3b, int64_t(e), -1));
    r.sweep.push_back(std::move(er));
  }

  for (size_t f = 0; f < F; ++f) {
    FtleResult fr;
    fr.eps_rel = opt.ftle_eps[f];
    std::vector<double> exps;
    for (const auto& p : ftle[f]) {
      if (p.vanished_at >= 0) {
        ++fr.vanished;
        continue;
      }
      double sum = 0;
      for (double g : p.g) sum += g;
      exps.push_back(sum / double(L));
    }
    fr.ftle = sample_stats(exps, fr.vanished, opt.bootstrap, noise_seed(opt.seed ^ 0xf71e, int64_t(f), -1));
    for (int64_t l = 0; l < L; ++l) {
      std::vector<double> g;
      int64_t excluded = 0;
      for (const auto& p : ftle[f]) {
        if (int64_t(p.g.size()) > l)
          g.push_back(p.g[size_t(l)]);
        else
          ++excluded;  // vanished at or before this layer
      }
      fr.growth.push_back(
          sample_stats(g, excluded, opt.bootstrap, noise_seed(opt.seed ^ 0xf71f, int64_t(f), l)));
    }
    r.ftle.push_back(std::move(fr));
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

// ---------------------------------------------------------------------------------------------------------
// Null-model controls

void validate_controls(const std::vector<std::string>& controls) {
  for (const auto& c : controls)
    TL_CHECK(std::find(std::begin(kControlNames), std::end(kControlNames), c) != std::end(kControlNames),
             "criticality: unknown control '{}' (shuffled, random-init)", c);
}

void shuffle_linear_weights(Model& model, uint64_t seed) {
  int64_t k = 0;
  for (const auto& v : model.views) {
    if (v.kind != ParamKind::Linear) continue;
    Rng rng(noise_seed(seed, 0x5f, k++));
    float* p = model.params.data() + v.offset;
    for (size_t i = v.numel; i > 1; --i) std::swap(p[i - 1], p[rng.below(i)]);  // Fisher-Yates
  }
}

CriticalityReport run_criticality_with_controls(Model& model, const std::vector<std::vector<int32_t>>& texts,
                                                const CriticalityOptions& opt,
                                                const std::vector<std::string>& controls,
                                                uint64_t control_seed,
                                                const BlockRunnerFactory& make_runner) {
  validate(opt);
  validate_controls(controls);
  // A runner of the model's current weights (codes and scales of changed weights), gone after its run.
  auto measure = [&] {
    const std::unique_ptr<BlockRunner> runner =
        make_runner ? make_runner(model) : std::make_unique<CpuBlockRunner>(model);
    TL_CHECK(runner != nullptr, "criticality: the block runner factory returned nothing");
    return run_criticality(*runner, texts, opt);
  };
  CriticalityReport rep;
  rep.model = measure();
  // shuffled before random-init: the shuffle must permute the model's own weights
  std::vector<std::string> order;
  for (const char* name : kControlNames)
    if (std::find(controls.begin(), controls.end(), name) != controls.end()) order.push_back(name);
  for (const auto& c : order) {
    if (c == "shuffled")
      shuffle_linear_weights(model, control_seed);
    else
      init_random(model, control_seed);
    rep.controls.emplace_back(c, measure());
  }
  return rep;
}

// ---------------------------------------------------------------------------------------------------------
// Output

namespace {

nlohmann::json num(double x) {
  return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr);
}

nlohmann::json stats_json(const SampleStats& s) {
  return {{"n", s.n},
          {"excluded", s.excluded},
          {"median", num(s.median)},
          {"p2.5", num(s.p025)},
          {"p97.5", num(s.p975)},
          {"ci95_median", {num(s.ci_lo), num(s.ci_hi)}}};
}

}  // namespace

nlohmann::json to_json(const CriticalityResult& r) {
  const auto& s = r.study;
  nlohmann::json layers = nlohmann::json::array();
  for (int64_t l = 0; l < r.layers; ++l) {
    const size_t i = size_t(l);
    layers.push_back({{"layer", l},
                      {"in_norm", s.in_norm[i]},
                      {"out_norm", s.out_norm[i]},
                      {"corr_norm", s.corr_norm[i]},
                      {"branching_ratio", s.br[i]},
                      {"correction_ratio", s.cr[i]},
                      {"delta", s.D[i]}});
  }
  nlohmann::json sweep = nlohmann::json::array();
  for (const auto& e : r.sweep) {
    nlohmann::json g = nlohmann::json::array();
    for (const auto& st : e.growth) g.push_back(stats_json(st));
    sweep.push_back({{"eps", e.eps},
                     {"D_in", e.D_in},
                     {"D", e.D},
                     {"lambda", num(e.lambda)},
                     {"amplification", num(e.amplification)},
                     {"log_growth", g},
                     {"lambda_per_sample", stats_json(e.lambda_samples)}});
  }
  nlohmann::json ftle = nlohmann::json::array();
  for (const auto& f : r.ftle) {
    nlohmann::json g = nlohmann::json::array();
    for (const auto& st : f.growth) g.push_back(stats_json(st));
    ftle.push_back({{"eps_rel", f.eps_rel},
                    {"ftle", stats_json(f.ftle)},
                    {"vanished", f.vanished},
                    {"local_growth", g}});
  }
  int64_t excluded = 0;
  for (auto e : r.text_excluded) excluded += e;
  return {{"layers", r.layers},
          {"hidden_size", r.hidden},
          {"texts", r.text_tokens.size()},
          {"text_tokens", r.text_tokens},
          {"text_tokens_excluded", r.text_excluded},
          {"tokens_excluded", excluded},
          {"options",
           {{"eps", r.options.eps},
            {"seeds", r.options.seeds},
            {"seed", r.options.seed},
            {"study_eps", r.options.study_eps},
            {"bootstrap", r.options.bootstrap},
            {"ftle_eps", r.options.ftle_eps},
            {"exclude_bos", r.options.exclude_bos},
            {"bos_id", r.options.bos_id},
            {"outlier_factor", r.options.outlier_factor}}},
          {"study",
           {{"eps", r.options.study_eps},
            {"seed_index", 0},
            {"layers", layers},
            {"D_in", s.D_in},
            {"avg_br", s.avg_br},
            {"std_br", s.std_br},
            {"min_br", {{"value", s.min_br}, {"layer", s.min_br_layer}}},
            {"max_br", {{"value", s.max_br}, {"layer", s.max_br_layer}}},
            {"layers_br_in_0.95_1.05", s.layers_in_band},
            {"br_label", s.br_label},
            {"lambda", num(s.lambda)},
            {"amplification", num(s.amplification)},
            {"lambda_label", s.lambda_label},
            {"soc_verdict", s.verdict}}},
          {"sweep", sweep},
          {"ftle", ftle},
          {"seconds", r.seconds}};
}

namespace {

// One row per model of the null-model comparison: the study's numbers, then the FTLE medians.
nlohmann::json comparison_row(const std::string& name, const CriticalityResult& r) {
  nlohmann::json f = nlohmann::json::object();
  for (const auto& e : r.ftle)
    f[fmt::format("{:g}", e.eps_rel)] = {{"median", num(e.ftle.median)},
                                         {"ci95_median", {num(e.ftle.ci_lo), num(e.ftle.ci_hi)}},
                                         {"vanished", e.vanished}};
  return {{"model", name},
          {"avg_br", r.study.avg_br},
          {"lambda", num(r.study.lambda)},
          {"amplification", num(r.study.amplification)},
          {"br_label", r.study.br_label},
          {"lambda_label", r.study.lambda_label},
          {"soc_verdict", r.study.verdict},
          {"ftle", f}};
}

}  // namespace

nlohmann::json to_json(const CriticalityReport& r) {
  nlohmann::json j = to_json(r.model);
  nlohmann::json controls = nlohmann::json::object();
  nlohmann::json cmp = nlohmann::json::array({comparison_row("model", r.model)});
  for (const auto& [name, res] : r.controls) {
    controls[name] = to_json(res);
    cmp.push_back(comparison_row(name, res));
  }
  j["controls"] = controls;
  j["comparison"] = cmp;
  return j;
}

std::string to_markdown(const CriticalityResult& r, const std::string& title) {
  const auto& s = r.study;
  std::string md = fmt::format("# {}\n\n", title);
  md += fmt::format(
      "{} texts ({} tokens in all), {} layers. The study's view: ε = {}, seed index 0.\n\n",
      r.text_tokens.size(),
      [&] {
        int64_t n = 0;
        for (auto t : r.text_tokens) n += t;
        return n;
      }(),
      r.layers, r.options.study_eps);
  md += "| layer | ‖input‖ | ‖output‖ | BR | CR | D_l |\n|---:|---:|---:|---:|---:|---:|\n";
  for (int64_t l = 0; l < r.layers; ++l) {
    const size_t i = size_t(l);
    md += fmt::format("| {} | {:.4g} | {:.4g} | {:.4f} | {:.4f} | {:.4g} |\n", l, s.in_norm[i], s.out_norm[i],
                      s.br[i], s.cr[i], s.D[i]);
  }
  md += fmt::format(
      "\n- D_in (perturbed embeddings) {:.4g}\n- mean BR {:.4f} (std {:.4f}; min {:.4f} at layer {}, max "
      "{:.4f} "
      "at layer {}; {} of {} layers in [0.95, 1.05]) → {}\n- λ {:.5f} → {}\n- amplification {:.4f}x\n- SOC "
      "verdict {}\n\n",
      s.D_in, s.avg_br, s.std_br, s.min_br, s.min_br_layer, s.max_br, s.max_br_layer, s.layers_in_band,
      r.layers, s.br_label, s.lambda, s.lambda_label, s.amplification, s.verdict);
  md += fmt::format(
      "## ε sweep ({} seeds per text)\n\nlog-growth g_l = ln(δ_l / δ_(l-1)) (layer 0: from the perturbed "
      "embeddings), median over texts × seeds, [2.5, 97.5] percentiles, and a bootstrap 95% interval of the "
      "median.\n\n",
      r.options.seeds);
  for (const auto& e : r.sweep) {
    md += fmt::format(
        "### ε = {}\n\nλ (study formula on mean D) {:.5f}, amplification {:.4f}x, per-sample λ median "
        "{:.5f} [{:.5f}, {:.5f}]\n\n",
        e.eps, e.lambda, e.amplification, e.lambda_samples.median, e.lambda_samples.p025,
        e.lambda_samples.p975);
    md +=
        "| layer | D_l | median g_l | 2.5–97.5% | 95% CI of median | n |\n|---:|---:|---:|---:|---:|---:|\n";
    for (int64_t l = 0; l < r.layers; ++l) {
      const auto& g = e.growth[size_t(l)];
      md += fmt::format("| {} | {:.4g} | {:.4f} | [{:.4f}, {:.4f}] | [{:.4f}, {:.4f}] | {}{} |\n", l,
                        e.D[size_t(l)], g.median, g.p025, g.p975, g.ci_lo, g.ci_hi, g.n,
                        g.excluded ? fmt::format(" ({} excluded)", g.excluded) : "");
    }
    md += "\n";
  }
  if (!r.ftle.empty()) {
    md += fmt::format(
        "## Finite-time Lyapunov estimate (renormalised every layer)\n\nThe embeddings get a perturbation of "
        "relative size ε along the sweep's noise draw; after every block the deviation is measured, g_l = "
        "ln(‖Δ_l‖ / (ε‖h_l‖)), and rescaled back to relative size ε. FTLE = mean of g over the {} layers, "
        "per text × seed; median, [2.5, 97.5] percentiles, bootstrap 95% CI.\n\n",
        r.layers);
    md +=
        "| ε (relative) | FTLE median | 2.5–97.5% | 95% CI | n | vanished "
        "|\n|---:|---:|---:|---:|---:|---:|\n";
    for (const auto& f : r.ftle)
      md += fmt::format("| {:g} | {:.4f} | [{:.4f}, {:.4f}] | [{:.4f}, {:.4f}] | {} | {} |\n", f.eps_rel,
                        f.ftle.median, f.ftle.p025, f.ftle.p975, f.ftle.ci_lo, f.ftle.ci_hi, f.ftle.n,
                        f.vanished);
    md += "\n| layer |";
    for (const auto& f : r.ftle) md += fmt::format(" g_l (ε = {:g}) |", f.eps_rel);
    md += "\n|---:|";
    for (size_t k = 0; k < r.ftle.size(); ++k) md += "---:|";
    md += "\n";
    for (int64_t l = 0; l < r.layers; ++l) {
      md += fmt::format("| {} |", l);
      for (const auto& f : r.ftle) {
        const auto& g = f.growth[size_t(l)];
        md += fmt::format(" {:+.4f} [{:+.4f}, {:+.4f}] |", g.median, g.p025, g.p975);
      }
      md += "\n";
    }
    md += "\n";
  }
  int64_t excluded = 0;
  for (auto e : r.text_excluded) excluded += e;
  if (r.options.exclude_bos || r.options.outlier_factor > 0)
    md += fmt::format("{} tokens excluded from every norm (BOS: {}, outlier factor: {}).\n\n", excluded,
                      r.options.exclude_bos ? "yes" : "no", r.options.outlier_factor);
  return md;
}

std::string to_markdown(const CriticalityReport& r, const std::string& title) {
  std::string md = to_markdown(r.model, title);
  if (r.controls.empty()) return md;
  md +=
      "## Null-model controls\n\nThe same texts, noise draws and formulas on models without learned "
      "structure: `shuffled` permutes every linear tensor's entries (same value distribution, scale and "
      "code fractions), `random-init` re-draws every parameter. A measurement that does not separate the "
      "model from these says nothing about training.\n\n| model | mean BR | λ (study) | amplification | "
      "verdict |";
  for (const auto& f : r.model.ftle) md += fmt::format(" FTLE ε={:g} |", f.eps_rel);
  md += "\n|---|---:|---:|---:|---|";
  for (size_t k = 0; k < r.model.ftle.size(); ++k) md += "---:|";
  md += "\n";
  auto row = [&](const std::string& name, const CriticalityResult& c) {
    md += fmt::format("| {} | {:.4f} | {:+.5f} | {:.4f}x | {} |", name, c.study.avg_br, c.study.lambda,
                      c.study.amplification, c.study.verdict);
    for (const auto& f : c.ftle)
      md += fmt::format(" {:+.4f} [{:+.4f}, {:+.4f}] |", f.ftle.median, f.ftle.ci_lo, f.ftle.ci_hi);
    md += "\n";
  };
  row("model", r.model);
  for (const auto& [name, c] : r.controls) row(name, c);
  md += "\n";
  return md;
}

}  // namespace tl
