// Perplexity under named protocols (DESIGN principle 3). Every result states its protocol, windows and
// token counts.
//   seed   — the RPT study exactly (rpt-spec §1.4, §2.2): non-overlapping 128-token chunks taken as
//            ids[i:i+128] for i in range(0, len(ids) - 128, 128), the first N chunks (default 50), no BOS,
//            all 127 next-token targets of each chunk scored, token-weighted mean.
//   llama  — llama.cpp's llama-perplexity: tokens with one BOS at the very start, n_ctx = 512 windows
//            [i·n_ctx, (i+1)·n_ctx), the first token of each window replaced by BOS, only the second half
//            scored (targets first+1 .. n_ctx-1 with first = n_ctx/2); needs >= 2·n_ctx tokens.
//   window — non-overlapping windows of n_ctx tokens, every target in the window scored (pruning papers).
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace tl {

enum class PplProtocol { Seed, Llama, Window };
PplProtocol parse_ppl_protocol(const std::string& s);
std::string ppl_protocol_name(PplProtocol p);

struct PplOptions {
  PplProtocol protocol = PplProtocol::Seed;
  int64_t ctx = 0;          // 0: protocol default (seed 128, llama 512, window 512)
  int64_t max_windows = 0;  // 0: protocol default (seed 50, others all); -1: all
  int64_t batch = 1;        // windows per forward call
  int32_t bos_id = -1;      // needed by llama
};

// Rejects impossible options (ctx < 2 unless 0, batch < 1, max_windows < -1) with a tl::Error naming the
// command-line flag.
void validate(const PplOptions& opt);

// One evaluation window: positions [score_from, tokens.size()-1) predict their next token.
struct PplWindow {
  std::vector<int32_t> tokens;
  int64_t score_from = 0;
};

// The windows a protocol scores over a token stream (for llama, `tokens` is the stream as tokenized
// with BOS at its start, as llama-perplexity does). Throws tl::Error if there are too few tokens.
std::vector<PplWindow> make_ppl_windows(std::span<const int32_t> tokens, const PplOptions& opt);

// Computes next-token logits for B windows of equal length T, rows [first_row, T-1) of each:
// out is (B, T-1-first_row, V), row-major.
using LogitsFn = std::function<void(std::span<const int32_t> tokens, int64_t B, int64_t T, int64_t first_row,
                                    std::vector<float>& out)>;

struct PplResult {
  std::string protocol;
  int64_t ctx = 0;
  int64_t windows = 0;
  int64_t tokens_scored = 0;
  double mean_nll = 0;  // nats per token
  double ppl = 0;
  double ppl_stderr = 0;  // llama-perplexity's: ppl · sqrt(var(nll) / (n-1))
  double nll_stderr = 0;  // standard error of the mean NLL
  double seconds = 0;
  double tokens_per_s = 0;  // tokens processed by the forward (windows · ctx) per second
  // Σ NLL of each window's scored targets, in window order (every window scores tokens_scored / windows
  // targets): what a paired bootstrap over windows resamples.
  std::vector<double> window_nll;
};

// Scores the windows with `logits` (vocab size V); shows progress on a terminal.
PplResult evaluate_ppl(const std::vector<PplWindow>& windows, int64_t vocab, const LogitsFn& logits,
                       const PplOptions& opt);

// For backends that score on their own (a GPU computes each target's NLL where the logits are, so only
// B·rows numbers cross to the host): the NLL of each next-token target of rows [first_row, T-1) of B windows
// of equal length T, out (B, T-1-first_row) in nats.
using NllFn = std::function<void(std::span<const int32_t> tokens, int64_t B, int64_t T, int64_t first_row,
                                 std::vector<double>& out)>;
PplResult evaluate_ppl_nll(const std::vector<PplWindow>& windows, int64_t vocab, const NllFn& nll,
                           const PplOptions& opt);

// An NllFn over a model that returns per-position losses (B*T) for given next-token targets (B*T, -1 where
// not counted), as training models do: the targets of rows [first_row, T-1) are built and their losses
// picked.
using PositionLossFn = std::function<void(std::span<const int32_t> tokens, std::span<const int32_t> targets,
                                          int64_t B, int64_t T, std::vector<float>& losses)>;
NllFn nll_from_position_losses(PositionLossFn losses);

// -log softmax(row)[target], in double (max-subtracted), as llama-perplexity computes it.
double token_nll(const float* logits_row, int64_t vocab, int32_t target);

}  // namespace tl
