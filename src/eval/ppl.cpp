#include "eval/ppl.hpp"

#include <chrono>
#include <cmath>

#include "core/enum_names.hpp"
#include "core/error.hpp"
#include "core/log.hpp"

namespace tl {

namespace {
constexpr std::array<EnumName<PplProtocol>, 3> kPplProtocols{
    {{PplProtocol::Seed, "seed"}, {PplProtocol::Llama, "llama"}, {PplProtocol::Window, "window"}}};
}  // namespace

PplProtocol parse_ppl_protocol(const std::string& s) {
  return parse_enum(kPplProtocols, s, "perplexity protocol");
}

std::string ppl_protocol_name(PplProtocol p) {
  return std::string(name_of(kPplProtocols, p));
}

void validate(const PplOptions& opt) {
  TL_CHECK(opt.ctx == 0 || opt.ctx >= 2, "--ctx must be at least 2, found {}", opt.ctx);
  TL_CHECK(opt.batch >= 1, "--batch must be at least 1, found {}", opt.batch);
  TL_CHECK(opt.max_windows >= -1, "--windows must be -1 (all), 0 (protocol default) or positive");
}

namespace {
int64_t default_ctx(PplProtocol p) {
  return p == PplProtocol::Seed ? 128 : 512;
}
}  // namespace

std::vector<PplWindow> make_ppl_windows(std::span<const int32_t> tokens, const PplOptions& opt) {
  const int64_t ctx = opt.ctx > 0 ? opt.ctx : default_ctx(opt.protocol);
  TL_CHECK(ctx >= 2, "perplexity: context must be at least 2 tokens, found {}", ctx);
  const int64_t n = int64_t(tokens.size());
  std::vector<PplWindow> out;
  int64_t limit = opt.max_windows;
  if (limit == 0) limit = opt.protocol == PplProtocol::Seed ? 50 : -1;
  auto full = [&](int64_t count) { return limit < 0 || count < limit; };

  switch (opt.protocol) {
    case PplProtocol::Seed:
      // Python: range(0, len(ids) - 128, 128) — the stop excludes a final window ending exactly at len.
      for (int64_t i = 0; i < n - ctx && full(int64_t(out.size())); i += ctx)
        out.push_back({std::vector<int32_t>(tokens.begin() + i, tokens.begin() + i + ctx), 0});
      TL_CHECK(!out.empty(), "perplexity (seed): need more than {} tokens, found {}", ctx, n);
      break;
    case PplProtocol::Llama: {
      TL_CHECK(opt.bos_id >= 0, "perplexity (llama): the tokenizer has no BOS token");
      TL_CHECK(n >= 2 * ctx, "perplexity (llama): need at least 2*ctx = {} tokens, found {}", 2 * ctx, n);
      const int64_t n_chunk = n / ctx;
      for (int64_t c = 0; c < n_chunk && full(int64_t(out.size())); ++c) {
        PplWindow w{std::vector<int32_t>(tokens.begin() + c * ctx, tokens.begin() + (c + 1) * ctx), ctx / 2};
        w.tokens[0] = opt.bos_id;  // replaced, not prepended
        out.push_back(std::move(w));
      }
      break;
    }
    case PplProtocol::Window: {
      const int64_t n_chunk = n / ctx;
      TL_CHECK(n_chunk >= 1, "perplexity (window): need at least ctx = {} tokens, found {}", ctx, n);
      for (int64_t c = 0; c < n_chunk && full(int64_t(out.size())); ++c)
        out.push_back({std::vector<int32_t>(tokens.begin() + c * ctx, tokens.begin() + (c + 1) * ctx), 0});
      break;
    }
  }
  return out;
}

double token_nll(const float* row, int64_t vocab, int32_t target) {
  double mx = row[0];
  for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, double(row[v]));
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - mx);
  return -(double(row[target]) - mx - std::log(sum));
}

PplResult evaluate_ppl(const std::vector<PplWindow>& windows, int64_t vocab, const LogitsFn& logits,
                       const PplOptions& opt) {
  std::vector<float> out;
  auto nll = [&](std::span<const int32_t> tokens, int64_t B, int64_t T, int64_t first,
                 std::vector<double>& nlls) {
    const int64_t rows = T - 1 - first;
    logits(tokens, B, T, first, out);
    TL_CHECK(int64_t(out.size()) == B * rows * vocab, "perplexity: model returned {} logits, expected {}",
             out.size(), B * rows * vocab);
    nlls.resize(size_t(B * rows));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < rows; ++i)
        nlls[size_t(b * rows + i)] =
            token_nll(out.data() + (b * rows + i) * vocab, vocab, tokens[size_t(b * T + first + i + 1)]);
  };
  return evaluate_ppl_nll(windows, vocab, nll, opt);
}

NllFn nll_from_position_losses(PositionLossFn losses_fn) {
  return [f = std::move(losses_fn), targets = std::vector<int32_t>(), losses = std::vector<float>()](
             std::span<const int32_t> toks, int64_t B, int64_t T, int64_t first,
             std::vector<double>& out) mutable {
    targets.assign(toks.size(), -1);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = first; t + 1 < T; ++t) targets[size_t(b * T + t)] = toks[size_t(b * T + t + 1)];
    f(toks, targets, B, T, losses);
    TL_CHECK(int64_t(losses.size()) == B * T, "perplexity: model returned {} losses, expected {}",
             losses.size(), B * T);
    const int64_t rows = T - 1 - first;
    out.resize(size_t(B * rows));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < rows; ++i) out[size_t(b * rows + i)] = losses[size_t(b * T + first + i)];
  };
}

PplResult evaluate_ppl_nll(const std::vector<PplWindow>& windows, int64_t vocab, const NllFn& nll_fn,
                           const PplOptions& opt) {
  TL_CHECK(!windows.empty(), "perplexity: no windows to score");
  TL_CHECK(opt.batch >= 1, "perplexity: batch must be >= 1, found {}", opt.batch);
  const int64_t T = int64_t(windows[0].tokens.size());
  const int64_t first = windows[0].score_from;
  for (const auto& w : windows)
    TL_CHECK(int64_t(w.tokens.size()) == T && w.score_from == first, "perplexity: windows differ in shape");
  for (const auto& w : windows)
    for (int32_t t : w.tokens)
      TL_CHECK(t >= 0 && t < vocab, "perplexity: token id {} outside the model's vocabulary of {}", t, vocab);

  PplResult r;
  r.protocol = ppl_protocol_name(opt.protocol);
  r.ctx = T;
  std::vector<double> nlls;  // kept for an exact two-pass variance
  nlls.reserve(windows.size() * size_t(T));
  const int64_t rows = T - 1 - first;
  r.window_nll.reserve(windows.size());
  std::vector<int32_t> batch_tokens;
  std::vector<double> out;
  Progress progress("perplexity", uint64_t(windows.size()), "tok");
  const auto start = std::chrono::steady_clock::now();
  for (size_t w0 = 0; w0 < windows.size(); w0 += size_t(opt.batch)) {
    const size_t w1 = std::min(windows.size(), w0 + size_t(opt.batch));
    const int64_t B = int64_t(w1 - w0);
    batch_tokens.clear();
    for (size_t w = w0; w < w1; ++w)
      batch_tokens.insert(batch_tokens.end(), windows[w].tokens.begin(), windows[w].tokens.end());
    nll_fn(batch_tokens, B, T, first, out);
    TL_CHECK(int64_t(out.size()) == B * rows, "perplexity: model returned {} losses, expected {}", out.size(),
             B * rows);
    for (int64_t b = 0; b < B; ++b) {
      double window_sum = 0;
      for (int64_t i = 0; i < rows; ++i) {
        const double nll = out[size_t(b * rows + i)];
        TL_CHECK(std::isfinite(nll), "perplexity: non-finite loss at window {} position {}", w0 + size_t(b),
                 first + i);
        nlls.push_back(nll);
        window_sum += nll;
      }
      r.window_nll.push_back(window_sum);
    }
    progress.update(w1, w1 * uint64_t(T));
  }
  progress.finish();
  r.seconds = seconds_since(start);
  r.windows = int64_t(windows.size());
  const auto count = int64_t(nlls.size());
  r.tokens_scored = count;
  double sum = 0;
  for (double x : nlls) sum += x;
  r.mean_nll = sum / double(count);
  r.ppl = std::exp(r.mean_nll);
  double ss = 0;
  for (double x : nlls) ss += (x - r.mean_nll) * (x - r.mean_nll);
  const double var = ss / double(count);  // population variance, as llama-perplexity's E[x²] − E[x]²
  r.nll_stderr = count > 1 ? std::sqrt(var / double(count - 1)) : 0.0;
  r.ppl_stderr = r.ppl * r.nll_stderr;
  r.tokens_per_s = r.seconds > 0 ? double(r.windows * T) / r.seconds : 0.0;
  return r;
}

}  // namespace tl
