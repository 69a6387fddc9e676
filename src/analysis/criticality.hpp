// The RPT study's "criticality" measurements (rpt-spec §7), exactly as its notebook computes them, in
// fp32 hidden states (norms accumulated in double), plus what the study lacked: seeded noise, several ε,
// several seeds and intervals (docs/criticality.md).
//
// Indexing follows the study: block l = 0..L-1 is decoder layer l; x_in of block 0 is the embedding, x_in
// of block l > 0 is the output of block l-1. h (L+1, T, C) holds h[0] = embeddings, h[l+1] = block l's
// output (the residual stream, before the final norm).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cpu/forward.hpp"
#include "model/backend.hpp"  // BlockRunner, BlockRunnerFactory

namespace tl {

// The study's epsilons (rpt-spec §7.2, §7.3).
constexpr double kNormEps = 1e-8;  // in the denominators of BR, CR and δ
constexpr double kLogEps = 1e-12;  // inside λ's logs and amplification's denominator

// ---------------------------------------------------------------------------------------------------------
// Analysis texts (rpt-spec §1.5).

// Rows of a split in WikiText form: brown -> the rows of to_wikitext(load_brown(split)) (input: the Brown
// directory, default find_brown_dir()); wikitext -> a wiki.*.raw file, or a directory + split; text -> the
// non-blank lines of a file / directory; jsonl -> one row per record ("text" field); sotu, moby-dick, kjv
// -> document_rows of the split's documents (input: default found; a single sotu / moby-dick file: no split).
std::vector<std::string> analysis_rows(const std::string& corpus, const std::filesystem::path& input,
                                       const std::string& split);
// For each row t = python_strip(row): if it has more than min_chars code points, keep its first `chars`
// code points; stop at n texts. Errors: n < 1, chars < 1.
std::vector<std::string> select_analysis_texts(const std::vector<std::string>& rows, int n = 20,
                                               int chars = 500, int min_chars = 100);

// ---------------------------------------------------------------------------------------------------------
// Where the decoder blocks run (BlockRunner, model/backend.hpp): the CPU reference below, or the GPU
// (cuda/criticality_runner.hpp).

// The CPU reference: one CpuModel forward per call, after_block called from a block hook (any hooks
// already installed on the CpuModel still run first). After a false, the forward still finishes (the
// CPU cannot stop it), but after_block is not called again.
class CpuBlockRunner final : public BlockRunner {
 public:
  explicit CpuBlockRunner(CpuModel& model) : cpu_(&model) {}
  // Owns a CpuModel of `model` (which must outlive this runner).
  explicit CpuBlockRunner(const Model& model);
  const BitNetConfig& config() const override { return cpu_->config(); }
  const float* embedding_rows() const override { return cpu_->embedding_rows(); }
  void run_blocks(const float* x, int64_t T, const AfterBlock& after_block) override;

 private:
  std::unique_ptr<CpuModel> owned_;
  CpuModel* cpu_;
};

// ---------------------------------------------------------------------------------------------------------
// Building blocks. The CpuModel overloads run on a CpuBlockRunner.

// h becomes (L+1, T, C): x (T,C) and every block's output of one sequence run from x.
void hidden_states_from_embeddings(BlockRunner& runner, const float* x, int64_t T, std::vector<float>& h);
void hidden_states_from_embeddings(CpuModel& model, const float* x, int64_t T, std::vector<float>& h);
// x (T,C) = the embedding rows of tokens. Errors: a token outside [0, vocab_size).
std::vector<float> embed(const BlockRunner& runner, std::span<const int32_t> tokens);
std::vector<float> embed(const CpuModel& model, std::span<const int32_t> tokens);

// ||b - a||_F / (||a||_F + 1e-8) over n elements: the study's δ (a = clean, b = perturbed).
double relative_perturbation(const float* a, const float* b, size_t n);
// The same over the rows t of (T,C) arrays with keep[t] != 0 (keep == nullptr: every row).
double relative_perturbation(const float* a, const float* b, int64_t T, int64_t C, const uint8_t* keep);

// Clean-pass statistics per block (rpt-spec §7.2), each (L): in/out/corr norms are token means of L2 norms
// (over the tokens with keep[t] != 0 when keep is given).
struct BlockStats {
  std::vector<double> in_norm, out_norm, corr_norm, br, cr;
};
BlockStats block_stats(const float* h, int64_t L, int64_t T, int64_t C, const uint8_t* keep = nullptr);

// The tokens a measurement counts (T): all, minus BOS tokens when exclude_bos, minus outliers when
// outlier_factor > 0 — a token whose L2 norm at any depth (embeddings or a block output, from the clean h
// (L+1,T,C)) exceeds outlier_factor × that depth's median token norm (massive activations).
std::vector<uint8_t> measurement_mask(std::span<const int32_t> tokens, const float* h, int64_t L, int64_t C,
                                      bool exclude_bos, int32_t bos_id, double outlier_factor);

// One perturbation of one text: delta_in = δ of the perturbed embeddings, delta (L) = δ_l of block outputs.
struct Profile {
  double delta_in = 0;
  std::vector<double> delta;
};
Profile perturbation_profile(const float* h_clean, const float* h_pert, int64_t L, int64_t T, int64_t C,
                             const uint8_t* keep = nullptr);

// Finite-time Lyapunov growth with renormalisation at every layer (Benettin's method, layers as time
// steps). The embeddings x (T,C) get a perturbation of relative size eps_rel along `direction` (T,C); after
// every block l the deviation from the clean stream h (L+1,T,C) is measured, g_l = ln(‖Δ_l‖ / (eps_rel ·
// ‖h_l+1‖)), and rescaled back to relative size eps_rel before block l+1 (norms over the kept rows).
// g (L) are the local growth rates; their mean is the finite-time exponent. A deviation that vanishes
// exactly (no int8 code flipped) ends the profile: `vanished_at` is that layer, g is cut there.
struct FtleProfile {
  std::vector<double> g;
  int64_t vanished_at = -1;
};
FtleProfile ftle_profile(BlockRunner& runner, const float* x, int64_t T, const float* h,
                         const float* direction, double eps_rel, const uint8_t* keep = nullptr);
FtleProfile ftle_profile(CpuModel& model, const float* x, int64_t T, const float* h, const float* direction,
                         double eps_rel, const uint8_t* keep = nullptr);

// Seed of the noise of (seed, seed index, text index): the same draw for every ε, so ε is all that changes.
uint64_t noise_seed(uint64_t seed, int64_t seed_index, int64_t text_index);
// n samples of N(0,1) as fp32 from tl::Rng(seed).
std::vector<float> gaussian_noise(uint64_t seed, size_t n);

// λ by the study's endpoint formula over D (L >= 2): (ln(D[L-1] + 1e-12) - ln(D[0] + 1e-12)) / (L - 1).
double study_lambda(const std::vector<double>& D);
double study_amplification(const std::vector<double>& D);  // D[L-1] / (D[0] + 1e-12)
std::string br_label(double avg_br);                       // |avg-1| < 0.1 CRITICAL, < 1 SUB, else SUPER
std::string lambda_label(double lambda);                   // |λ| < 0.05 CRITICAL, < 0 SUB, else SUPER
// VALIDATED if both criteria hold; PARTIAL if one does; NOT CONFIRMED if neither (the spec names the last
// two without their rule; this is our reading).
std::string soc_verdict(double avg_br, double lambda);

// Linear-interpolation percentile (numpy's default), q in [0, 100]; v non-empty.
double percentile(std::vector<double> v, double q);

// ---------------------------------------------------------------------------------------------------------
// The whole measurement.

struct CriticalityOptions {
  std::vector<double> eps = {1e-4, 1e-3, 1e-2, 1e-1};  // absolute σ of the embedding noise
  int seeds = 3;                                       // noise draws per text and ε
  uint64_t seed = 0;
  double study_eps = 0.01;  // the study's view: this ε with seed index 0
  int bootstrap = 1000;     // resamples for the median's interval
  // Finite-time Lyapunov estimate: relative perturbation sizes, renormalised every layer (empty: off).
  std::vector<double> ftle_eps = {1e-3, 1e-2};
  // Tokens left out of every norm (the noise still reaches them; the forward is causal).
  bool exclude_bos = false;
  int32_t bos_id = -1;
  double outlier_factor = 0;  // > 0: exclude massive-activation tokens (see measurement_mask)
};
// Errors: no ε, an ε <= 0 or not finite, seeds < 1, study_eps <= 0, bootstrap < 0, an FTLE ε outside
// (0, 1), outlier_factor < 0 or in (0, 1], exclude_bos without a BOS id.
void validate(const CriticalityOptions& opt);

// The study's aggregate over texts (rpt-spec §7.2-§7.3): every field is the mean over texts.
struct StudySummary {
  std::vector<double> in_norm, out_norm, corr_norm, br, cr;        // (L)
  std::vector<double> D;                                           // (L) mean δ_l
  double D_in = 0;                                                 // mean δ of the perturbed embeddings
  double avg_br = 0, std_br = 0, min_br = 0, max_br = 0;           // std: population
  int64_t min_br_layer = 0, max_br_layer = 0, layers_in_band = 0;  // band: 0.95 <= BR <= 1.05
  double lambda = 0, amplification = 0;
  std::string br_label, lambda_label, verdict;
};
StudySummary study_summary(const std::vector<BlockStats>& clean, const std::vector<Profile>& pert);

// A sample's median with its 2.5-97.5 percentile range and a bootstrap 95% interval of the median.
struct SampleStats {
  int64_t n = 0, excluded = 0;  // excluded: log of 0 (δ == 0 at either end)
  double median = 0, p025 = 0, p975 = 0, ci_lo = 0, ci_hi = 0;
};
SampleStats sample_stats(const std::vector<double>& v, int64_t excluded, int bootstrap, uint64_t seed);

// One ε over texts × seeds. growth (L): step 0 = ln(δ_0 / δ_in) (injection -> block 0), step l > 0 =
// ln(δ_l / δ_{l-1}). lambda_samples: per text × seed, the endpoint λ of that single profile.
struct EpsResult {
  double eps = 0;
  std::vector<double> D;                           // (L) mean δ_l over texts × seeds
  double D_in = 0, lambda = 0, amplification = 0;  // from D, by the study's formulas
  std::vector<SampleStats> growth;                 // (L)
  SampleStats lambda_samples;
  // Per sample (text-major, seed-minor): δ of the first and the last block, so that λ and amplification of
  // the mean profile can be resampled over texts.
  std::vector<double> delta_first, delta_last;
};

// One relative ε of the finite-time Lyapunov estimate over texts × seeds (same noise draws as the sweep).
struct FtleResult {
  double eps_rel = 0;
  std::vector<SampleStats> growth;  // (L) local growth g_l
  SampleStats ftle;                 // per-sample mean of g over the layers (the finite-time exponent)
  int64_t vanished = 0;             // samples whose deviation vanished exactly (left out of `ftle`)
};

struct CriticalityResult {
  int64_t layers = 0, hidden = 0;
  std::vector<int64_t> text_tokens;    // per text
  std::vector<int64_t> text_excluded;  // per text: tokens left out of the norms
  CriticalityOptions options;
  StudySummary study;  // ε = study_eps, seed index 0
  std::vector<EpsResult> sweep;
  std::vector<FtleResult> ftle;
  double seconds = 0;
};

// texts: token sequences (BOS included as the caller wants), each run alone (batch 1).
// Errors: no text, an empty text, fewer than 2 layers (λ needs two endpoints), invalid options, a text
// whose every token is excluded.
CriticalityResult run_criticality(BlockRunner& runner, const std::vector<std::vector<int32_t>>& texts,
                                  const CriticalityOptions& opt);
CriticalityResult run_criticality(CpuModel& model, const std::vector<std::vector<int32_t>>& texts,
                                  const CriticalityOptions& opt);

// ---------------------------------------------------------------------------------------------------------
// Null-model controls (rpt-spec §10.1): the same measurement on models with no learned structure.
//   shuffled     every linear weight tensor's entries permuted at random (seeded): the same value
//                distribution, absmean scale and ternary-code fractions; embeddings and norms unchanged
//   random-init  every parameter re-drawn as a fresh model (N(0, initializer_range), norms 1)
constexpr const char* kControlNames[] = {"shuffled", "random-init"};
void validate_controls(const std::vector<std::string>& controls);  // unknown name: tl::Error
void shuffle_linear_weights(Model& model, uint64_t seed);

struct CriticalityReport {
  CriticalityResult model;
  std::vector<std::pair<std::string, CriticalityResult>> controls;  // in the order asked
};
// Runs the model, then each control in the order given. To fit a 2B model in memory the controls are made
// IN PLACE: `model` holds the last control's weights afterwards. Noise draws are the same for all.
// Without make_runner: CpuBlockRunner.
CriticalityReport run_criticality_with_controls(Model& model, const std::vector<std::vector<int32_t>>& texts,
                                                const CriticalityOptions& opt,
                                                const std::vector<std::string>& controls,
                                                uint64_t control_seed,
                                                const BlockRunnerFactory& make_runner = nullptr);

nlohmann::json to_json(const CriticalityResult& r);
nlohmann::json to_json(const CriticalityReport& r);  // the model's fields + "controls" + "comparison"
// Markdown report: the study's table, the summary, the ε sweep and the FTLE. `title` heads it.
std::string to_markdown(const CriticalityResult& r, const std::string& title);
std::string to_markdown(const CriticalityReport& r, const std::string& title);  // + the controls' table

}  // namespace tl
