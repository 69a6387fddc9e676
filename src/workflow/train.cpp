#include "workflow/train.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/error.hpp"
#include "core/file.hpp"
#include "core/log.hpp"
#include "cpu/threads.hpp"
#include "formats/checkpoint.hpp"
#include "model/quant.hpp"
#include "text/corpus.hpp"
#include "text/token_file.hpp"
#include "text/tokenizer.hpp"
#include "train/snap.hpp"
#include "workflow/backends.hpp"
#include "workflow/prune.hpp"

namespace tl {

namespace fs = std::filesystem;
using train::WeightQuantMode;

namespace {

using Clock = std::chrono::steady_clock;

// Checkpoints are written by rank 0; the other ranks only bring their host Model up to date (the same
// collective steps: a sharded optimizer's moments are gathered through every rank).
void save_or_sync(train::Trainer& tr, const fs::path& dir) {
  if (process_group().writes_outputs())
    tr.save_state(dir);
  else
    tr.sync_model();
}

fs::path tokenizer_path(const TrainRunOptions& opt) {
  return resolve_tokenizer_path(opt.checkpoint, opt.tokenizer);
}

std::vector<int32_t> training_tokens(const TrainRunOptions& opt, const Model& m) {
  if (!opt.train_tokens.empty()) {
    TokenFile tf = read_token_file(opt.train_tokens);
    TL_CHECK(tf.meta.vocab_size <= uint32_t(m.config.vocab_size),
             "train: {} was made for a vocabulary of {} tokens, the model has {}", opt.train_tokens.string(),
             tf.meta.vocab_size, m.config.vocab_size);
    return std::move(tf.tokens);
  }
  const Tokenizer tok = Tokenizer::from_file(tokenizer_path(opt));
  TL_CHECK(tok.vocab_size() <= size_t(m.config.vocab_size),
           "train: the tokenizer has {} tokens, the model {}", tok.vocab_size(), m.config.vocab_size);
  PrepareOptions p;
  p.corpus = parse_corpus_kind(opt.corpus);
  p.input = opt.input;
  p.split = parse_split(opt.train_split);
  std::error_code ec;
  p.split_given = !(!opt.input.empty() && fs::is_regular_file(opt.input, ec));
  p.protocol = PrepProtocol::Seed;  // the study's preparation: rows >= 20 code points, no BOS
  return prepare_corpus(p, tok).tokens;
}

PplData validation_data(const TrainRunOptions& opt, const Model& m) {
  PplRunOptions e;
  e.checkpoint = opt.checkpoint;
  e.tokenizer = tokenizer_path(opt);
  e.corpus = opt.corpus;
  e.input = opt.input;
  e.split = opt.val_split;
  e.ppl = opt.ppl;
  e.device = opt.device;
  return prepare_perplexity(e, m);
}

// The training log, one CSV row per step, flushed as it goes (an interrupted run keeps its log).
class CsvLog {
 public:
  // Resuming appends to the log of the interrupted run (a missing log starts afresh).
  CsvLog(const fs::path& path, bool resume) : path_(path) {
    if (!process_group().writes_outputs()) return;  // rank 0 keeps the log
    std::error_code ec;
    const bool append = resume && fs::exists(path, ec);
    f_.open(path, append ? std::ios::app : std::ios::trunc);
    TL_CHECK(bool(f_), "train: cannot write {}", path.string());
    if (!append) f_ << "run,step,loss,lr,grad_norm,tokens,seconds\n";
  }
  // A resumed run goes on from its last saved step: the rows the interrupted run logged after it are
  // dropped, so no step appears twice.
  void cut_after(const std::string& run, int64_t step) {
    if (!f_.is_open()) return;
    f_.close();
    std::istringstream in(read_file(path_));
    std::string out, line;
    size_t dropped = 0;
    while (std::getline(in, line)) {
      const size_t c1 = line.find(','), c2 = c1 == std::string::npos ? c1 : line.find(',', c1 + 1);
      if (c2 != std::string::npos && line.compare(0, c1, run) == 0 && c1 == run.size()) {
        int64_t s = 0;
        const auto [end, ec] = std::from_chars(line.data() + c1 + 1, line.data() + c2, s);
        if (ec == std::errc() && end == line.data() + c2 && s > step) {
          ++dropped;
          continue;
        }
      }
      out += line + "\n";
    }
    if (dropped) {
      write_file_atomic(path_, out);
      log_info("{}: dropped {} log rows after step {} (logged after the last saved state)", run, dropped,
               step);
    }
    f_.open(path_, std::ios::app);
    TL_CHECK(bool(f_), "train: cannot write {}", path_.string());
  }
  void row(const std::string& run, const train::StepLog& s) {
    if (!f_.is_open()) return;
    f_ << fmt::format("{},{},{:.6f},{:.6g},{:.6g},{},{:.4f}\n", run, s.step, s.loss, s.lr, s.grad_norm,
                      s.tokens, s.seconds);
    f_.flush();
  }

 private:
  fs::path path_;
  std::ofstream f_;
};

double code_sparsity(const Model& m, WeightQuantMode mode) {
  // only rank 0's reports are written; the others skip the copy of the whole model
  if (mode == WeightQuantMode::Off || !process_group().writes_outputs()) return 0;
  Model copy = m;  // the model training's forward ran: its zero codes
  return train::snap_model(copy, mode).code_sparsity;
}

}  // namespace

double latent_sparsity(const Model& m) {
  size_t zeros = 0, n = 0;
  for (const auto& v : m.views)
    if (v.kind == ParamKind::Linear) {
      const float* w = m.params.data() + v.offset;
      zeros += size_t(std::count(w, w + v.numel, 0.0f));
      n += v.numel;
    }
  return n ? double(zeros) / double(n) : 0.0;
}

namespace {

// "level 5%" -> "state-level-5pct"
std::string state_name(const std::string& run) {
  std::string s = "state-";
  for (char c : run) {
    if (c == '%')
      s += "pct";
    else if (std::isalnum(static_cast<unsigned char>(c)) || c == '.')
      s += c;
    else
      s += '-';
  }
  return s;
}

// Validation perplexity on the training backend's own model (the GPU's copy, its quantizers: what its
// forward computes), without a second copy of the model.
PplResult backend_perplexity(StepBackend& backend, const PplData& data, int64_t vocab) {
  auto losses = [&backend](std::span<const int32_t> toks, std::span<const int32_t> targets, int64_t B,
                           int64_t T,
                           std::vector<float>& out) { backend.eval_losses(toks, targets, B, T, out); };
  return evaluate_ppl_nll(data.windows, vocab, nll_from_position_losses(losses), data.ppl);
}

// Tokens/s over the steps' own time, and the study's return value: the mean of the last min(50, steps)
// losses.
void finish_record(TrainRunRecord& rec, int64_t tokens_done, double run_seconds) {
  rec.tokens_per_s = double(tokens_done) / std::max(run_seconds, 1e-9);
  const size_t k = std::min<size_t>(50, rec.steps.size());
  for (size_t i = rec.steps.size() - k; i < rec.steps.size(); ++i)
    rec.final_loss += rec.steps[i].loss / double(k);
}

// The GPU's step backend for a run (null on the CPU): sized for a micro-batch and for `eval_tokens` tokens
// of validation windows.
std::unique_ptr<StepBackend> step_backend_for(const TrainRunOptions& opt, int64_t eval_tokens) {
  StepBackendRequest r;
  r.quant = opt.train.quant;
  r.max_tokens = std::max(opt.train.batch / opt.train.grad_accum / process_group().world * opt.train.seq_len,
                          eval_tokens);
  r.recompute = opt.recompute;
  r.shard_optimizer = opt.shard_optimizer;
  return make_step_backend(opt.device, r);
}

// One training run (a pretrain, or a level): resumable, logged, evaluated.
TrainRunRecord train_run(Model& m, const TrainRunOptions& opt, std::span<const int32_t> tokens,
                         std::vector<TensorMask> masks, const PplData& val, const std::string& name,
                         CsvLog& csv) {
  TrainRunRecord rec;
  rec.name = name;
  const auto t0 = Clock::now();
  const WeightQuantMode mode = opt.train.quant.weight_quant;
  const fs::path state_dir = opt.out_dir / state_name(name);
  const int64_t val_tokens = val.windows.empty() ? 0 : val.ppl.batch * int64_t(val.windows[0].tokens.size());
  train::Trainer tr(m, opt.train, tokens, std::move(masks), step_backend_for(opt, val_tokens));
  if (const auto saved = opt.resume ? train::find_saved_state(state_dir) : std::nullopt) {
    tr.load_state(*saved);
    log_info("{}: resumed at step {} of {} from {}", name, tr.steps_done(), opt.train.steps, saved->string());
  }
  if (opt.resume) csv.cut_after(name, tr.steps_done());
  const int64_t total = opt.train.steps;
  const int64_t first = tr.steps_done();
  int64_t tokens_done = 0;
  double run_seconds = 0;
  Progress progress(name, uint64_t(total), "tok");
  while (!tr.done()) {
    train::StepLog s;
    try {
      s = tr.step();
    } catch (const train::NonFiniteError& e) {
      save_or_sync(tr, state_dir);  // the parameters are those before the failed step
      fail("{}: {} — stopped; the last good state (step {}) is in {}", name, e.what(), tr.steps_done(),
           state_dir.string());
    }
    rec.steps.push_back(s);
    csv.row(name, s);
    tokens_done += s.tokens;
    run_seconds += s.seconds;
    progress.update(uint64_t(s.step), uint64_t(tokens_done));
    const double tps = double(tokens_done) / std::max(run_seconds, 1e-9);
    if (opt.log_every > 0 && (s.step % opt.log_every == 0 || s.step == total)) {
      const double eta = double(total - s.step) * run_seconds / double(s.step - first);
      log_info("{}: step {}/{} loss {:.4f} lr {:.3g} |g| {:.3g} {:.0f} tok/s ETA {:.0f} s", name, s.step,
               total, s.loss, s.lr, s.grad_norm, tps, eta);
    }
    const bool writer = process_group().writes_outputs();  // the other ranks do not evaluate
    if (writer && opt.eval_every > 0 && s.step % opt.eval_every == 0 && s.step < total) {
      const double p = tr.backend() ? backend_perplexity(*tr.backend(), val, m.config.vocab_size).ppl
                                    : evaluate_trained(m, mode, val).ppl;
      rec.val_ppl.emplace_back(s.step, p);
      log_info("{}: step {} validation PPL {:.4f}", name, s.step, p);
    }
    if (opt.save_every > 0 && s.step % opt.save_every == 0 && s.step < total) save_or_sync(tr, state_dir);
  }
  progress.finish();
  save_or_sync(tr, state_dir);
  rec.seconds = seconds_since(t0);
  finish_record(rec, tokens_done, run_seconds);
  return rec;
}

void copy_tokenizer(const TrainRunOptions& opt, const fs::path& dir) {
  std::error_code ec;
  write_file_atomic(dir / "tokenizer.json", read_file(tokenizer_path(opt)));
  const fs::path cfg = tokenizer_path(opt).parent_path() / "tokenizer_config.json";
  if (fs::exists(cfg, ec)) write_file_atomic(dir / "tokenizer_config.json", read_file(cfg));
}

// The latent model (fp32 master), its masks and how it was trained: what `ternlab snap` needs.
void save_trained(const Model& m, const TrainRunOptions& opt, const fs::path& dir,
                  const std::vector<TensorMask>& masks) {
  fs::create_directories(dir);
  // The master layout cannot hold fixed scales: they go to ternlab_train.json below.
  save_checkpoint(m, dir, SaveOptions{CheckpointLayout::Master, opt.save_dtype, 0, true});
  copy_tokenizer(opt, dir);
  nlohmann::json j = {
      {"format", "ternlab-train"},
      {"weight_quant", train::weight_quant_name(opt.train.quant.weight_quant)},
      {"act_quant", opt.train.quant.act_quant},
      {"fixed_scale", nlohmann::json::object()},
      {"masks", masks.empty() ? nlohmann::json(nullptr) : nlohmann::json("masks.safetensors")}};
  for (const auto& [name, s] : m.fixed_scale) j["fixed_scale"][name] = s;
  write_file_atomic(dir / "ternlab_train.json", j.dump(2) + "\n");
  if (!masks.empty()) {
    std::vector<PruneMask> pm;
    for (const auto& mk : masks) {
      const ParamView& v = m.view(mk.name);
      pm.push_back({mk.name, v.shape[0], v.shape[1], mk.keep});
    }
    PruneReport rep;
    write_prune_masks(dir / "masks.safetensors", pm, rep);
  }
}

}  // namespace

// Masks of the current zeros of every linear (a level's pruning AND the earlier levels').
std::vector<TensorMask> masks_of_zeros(const Model& m) {
  std::vector<TensorMask> out;
  for (const auto& v : m.views) {
    if (v.kind != ParamKind::Linear) continue;
    TensorMask mk{v.name, std::vector<uint8_t>(v.numel)};
    const float* w = m.params.data() + v.offset;
    for (size_t i = 0; i < v.numel; ++i) mk.keep[i] = w[i] != 0.0f;
    out.push_back(std::move(mk));
  }
  return out;
}

namespace {}  // namespace

// Scales captured before any pruning (rpt-spec §5.2 step 3): rpt-fixed takes mean|w| over the non-zero
// latents (the deploy script), fixed the absmean over all entries. A checkpoint's own fixed scales (packed
// layout) are kept.
void capture_fixed_scales(Model& m, WeightQuantMode mode) {
  if (mode != WeightQuantMode::Fixed && mode != WeightQuantMode::RptFixed) return;
  for (const auto& v : m.views) {
    if (v.kind != ParamKind::Linear || m.fixed_scale.count(v.name)) continue;
    const float* w = m.params.data() + v.offset;
    double sum = 0;
    size_t nz = 0;
    for (size_t i = 0; i < v.numel; ++i)
      if (w[i] != 0.0f) {
        sum += std::fabs(double(w[i]));
        ++nz;
      }
    const double s =
        mode == WeightQuantMode::RptFixed ? (nz ? sum / double(nz) : 0.0) : absmean_scale(w, v.numel);
    m.fixed_scale[v.name] = float(std::max(s, 1e-5));
  }
}

TrainRunRecord train_in_memory(Model& m, const TrainRunOptions& opt, std::span<const int32_t> tokens,
                               std::vector<TensorMask> masks, const std::string& name) {
  validate(opt.train);
  TrainRunRecord rec;
  rec.name = name;
  const auto t0 = Clock::now();
  train::Trainer tr(m, opt.train, tokens, std::move(masks), step_backend_for(opt, 0));
  int64_t tokens_done = 0;
  double run_seconds = 0;
  Progress progress(name, uint64_t(opt.train.steps), "tok");
  while (!tr.done()) {
    train::StepLog s;
    try {
      s = tr.step();
    } catch (const train::NonFiniteError& e) {
      fail("{}: {} — stopped at step {}", name, e.what(), e.step);
    }
    rec.steps.push_back(s);
    tokens_done += s.tokens;
    run_seconds += s.seconds;
    progress.update(uint64_t(s.step), uint64_t(tokens_done));
  }
  progress.finish();
  tr.sync_model();
  rec.seconds = seconds_since(t0);
  finish_record(rec, tokens_done, run_seconds);
  return rec;
}

PplResult evaluate_trained(const Model& model, WeightQuantMode mode, const PplData& data) {
  if (mode != WeightQuantMode::RptFixed) return evaluate_perplexity(model, data);
  Model snapped = model;
  train::snap_model(snapped, mode);
  return evaluate_perplexity(snapped, data);
}

double unigram_ppl(std::span<const int32_t> train, std::span<const int32_t> val, int64_t vocab) {
  TL_CHECK(vocab > 0 && !val.empty(), "unigram_ppl: empty input");
  std::vector<double> count(size_t(vocab), 1.0);  // add-one
  for (int32_t t : train)
    if (t >= 0 && t < vocab) count[size_t(t)] += 1;
  const double total = double(train.size()) + double(vocab);
  double nll = 0;
  for (int32_t t : val) nll -= std::log(count[size_t(std::clamp<int64_t>(t, 0, vocab - 1))] / total);
  return std::exp(nll / double(val.size()));
}

namespace {

// Validation PPL is computed by rank 0 only (its reports are the only ones written); NaN elsewhere.
double evaluate_if_writer(const Model& m, WeightQuantMode mode, const PplData& val) {
  if (!process_group().writes_outputs()) return std::numeric_limits<double>::quiet_NaN();
  return evaluate_trained(m, mode, val).ppl;
}

// The targets the validation windows score, for the unigram baseline.
std::vector<int32_t> scored_targets(const PplData& val) {
  std::vector<int32_t> t;
  for (const auto& w : val.windows)
    for (size_t i = size_t(w.score_from) + 1; i < w.tokens.size(); ++i) t.push_back(w.tokens[i]);
  return t;
}

TrainRunResult start(const TrainRunOptions& opt, const std::string& command, Model& m,
                     std::vector<int32_t>& tokens, PplData& val) {
  validate(opt.train);
  validate(opt.ppl);
  TL_CHECK(opt.eval_every >= 0 && opt.save_every >= 0 && opt.log_every >= 0,
           "--eval-every, --save-every and --log-every must be >= 0");
  TL_CHECK(!opt.out_dir.empty(), "{}: -o OUT_DIR is required", command);
  std::error_code ec;
  TL_CHECK(fs::weakly_canonical(opt.out_dir, ec) != fs::weakly_canonical(opt.checkpoint, ec),
           "{}: the output directory must differ from the input checkpoint", command);
  m = load_checkpoint(opt.checkpoint);
  tokens = training_tokens(opt, m);
  val = validation_data(opt, m);
  const ProcessGroup& g = process_group();
  if (g.world > 1) {
    TL_CHECK(opt.device == Device::Cuda, "{}: {} processes (one per GPU) need --device cuda", command,
             g.world);
    const int64_t micro = opt.train.batch / opt.train.grad_accum;
    TL_CHECK(micro % g.world == 0,
             "{}: a micro-batch of {} sequences (--batch / --grad-accum) does not split over {} GPUs",
             command, micro, g.world);
  }
  if (g.writes_outputs()) fs::create_directories(opt.out_dir);
  TrainRunResult r;
  r.command = command;
  r.options = opt;
  r.eval = val.run;
  r.unigram_ppl = unigram_ppl(tokens, scored_targets(val), m.config.vocab_size);
  log_info("{}: {} training tokens ({} chunks of {}), validation {} windows; unigram PPL {:.2f}", command,
           tokens.size(), tokens.size() / size_t(opt.train.seq_len), opt.train.seq_len, val.windows.size(),
           r.unigram_ppl);
  const WeightQuantMode mode = opt.train.quant.weight_quant;
  capture_fixed_scales(m, mode);
  r.baseline_ppl = evaluate_if_writer(m, mode, val);
  log_info("{}: baseline PPL {:.4f}", command, r.baseline_ppl);
  return r;
}

}  // namespace

// --resume with nothing saved would silently start from step 0: refuse instead.
static void require_saved_state(const TrainRunOptions& opt, const char* command) {
  if (!opt.resume) return;
  std::error_code ec;
  if (fs::is_directory(opt.out_dir, ec))
    for (const auto& e : fs::directory_iterator(opt.out_dir, ec))
      if (e.path().filename().string().starts_with("state-") &&
          fs::is_regular_file(e.path() / "trainer_state.json"))
        return;
  fail(
      "{}: --resume, but {} holds no saved training state (no state-*/trainer_state.json); run without "
      "--resume to start afresh",
      command, opt.out_dir.string());
}

TrainRunResult run_pretrain(const TrainRunOptions& opt) {
  require_saved_state(opt, "pretrain");
  const auto t0 = Clock::now();
  Model m;
  std::vector<int32_t> tokens;
  PplData val;
  TrainRunResult r = start(opt, "pretrain", m, tokens, val);
  CsvLog csv(opt.out_dir / "train_log.csv", opt.resume);
  const WeightQuantMode mode = opt.train.quant.weight_quant;
  TrainRunRecord rec = train_run(m, opt, tokens, {}, val, "pretrain", csv);
  rec.ppl_before = r.baseline_ppl;
  rec.ppl_after = evaluate_if_writer(m, mode, val);
  rec.latent_sparsity = latent_sparsity(m);
  rec.code_sparsity = code_sparsity(m, mode);
  log_info("pretrain: validation PPL {:.4f} -> {:.4f} (unigram {:.4f})", r.baseline_ppl, *rec.ppl_after,
           r.unigram_ppl);
  r.runs.push_back(std::move(rec));
  r.final_checkpoint = opt.out_dir.string();
  r.seconds = seconds_since(t0);
  if (!process_group().writes_outputs()) return r;
  save_trained(m, opt, opt.out_dir, {});
  write_file_atomic(opt.out_dir / "train_report.json", to_json(r).dump(2) + "\n");
  write_file_atomic(opt.out_dir / "train_report.md", to_markdown(r));
  return r;
}

TrainRunResult run_finetune(const FinetuneOptions& fo) {
  const TrainRunOptions& opt = fo.run;
  TL_CHECK(!fo.levels.empty(), "finetune: --levels is empty");
  for (double l : fo.levels)
    TL_CHECK(std::isfinite(l) && l >= 0 && l < 100, "finetune: every level must be in [0, 100), found {}", l);
  TL_CHECK(fo.method != PruneMethod::NM,
           "finetune: N:M pruning has no level; use seed, global, per-tensor or random");
  require_saved_state(opt, "finetune");
  const auto t0 = Clock::now();
  Model start_model;
  std::vector<int32_t> tokens;
  PplData val;
  TrainRunResult r = start(opt, "finetune", start_model, tokens, val);
  CsvLog csv(opt.out_dir / "train_log.csv", opt.resume);
  const WeightQuantMode mode = opt.train.quant.weight_quant;

  auto run_levels = [&](bool control, std::vector<TrainRunRecord>& out) {
    Model m = start_model;
    std::vector<TensorMask> masks;
    for (size_t li = 0; li < fo.levels.size(); ++li) {
      const double level = fo.levels[li];
      // the control's run i mirrors level i's schedule at 0% sparsity
      const std::string name = control ? fmt::format("control {}", li + 1) : fmt::format("level {}%", level);
      double before = 0;
      if (!control && level > 0) {
        PruneOptions po;
        po.method = fo.method;
        po.sparsity = level;
        po.seed = fo.prune_seed;
        if (fo.method == PruneMethod::Random) po.match = PruneMethod::Seed;
        prune_model(m, po);  // on the current weights, as the study's loop
        masks = masks_of_zeros(m);
      }
      before = evaluate_if_writer(m, mode, val);
      TrainRunRecord rec = train_run(m, opt, tokens, masks, val, name, csv);
      rec.target_sparsity = control ? 0 : level;
      rec.latent_sparsity = latent_sparsity(m);
      rec.code_sparsity = code_sparsity(m, mode);
      rec.ppl_before = before;
      rec.ppl_after = evaluate_if_writer(m, mode, val);
      log_info("finetune: {}: latent sparsity {:.2f}%, PPL {:.4f} -> {:.4f}", name, 100 * rec.latent_sparsity,
               before, *rec.ppl_after);
      out.push_back(std::move(rec));
    }
    const fs::path dir = opt.out_dir / (control ? "control" : "pruned");
    if (process_group().writes_outputs()) save_trained(m, opt, dir, masks);
    return dir.string();
  };
  r.final_checkpoint = run_levels(false, r.runs);
  if (fo.control) r.control_checkpoint = run_levels(true, r.control);
  r.seconds = seconds_since(t0);
  nlohmann::json j = to_json(r);
  j["levels"] = fo.levels;
  j["prune_method"] = prune_method_name(fo.method);
  j["prune_seed"] = fo.prune_seed;
  if (!process_group().writes_outputs()) return r;
  write_file_atomic(opt.out_dir / "finetune_report.json", j.dump(2) + "\n");
  write_file_atomic(opt.out_dir / "finetune_report.md", to_markdown(r));
  return r;
}

namespace {

nlohmann::json record_json(const TrainRunRecord& rec) {
  nlohmann::json steps = nlohmann::json::array();
  for (const auto& s : rec.steps)
    steps.push_back({{"step", s.step}, {"loss", s.loss}, {"lr", s.lr}, {"grad_norm", s.grad_norm}});
  nlohmann::json val = nlohmann::json::array();
  for (const auto& [st, p] : rec.val_ppl) val.push_back({{"step", st}, {"ppl", p}});
  auto opt_num = [](const std::optional<double>& x) {
    return x ? nlohmann::json(*x) : nlohmann::json(nullptr);
  };
  return {{"name", rec.name},
          {"target_sparsity", rec.target_sparsity},
          {"latent_sparsity", rec.latent_sparsity},
          {"code_sparsity", rec.code_sparsity},
          {"ppl_before", opt_num(rec.ppl_before)},
          {"ppl_after", opt_num(rec.ppl_after)},
          {"final_loss", rec.final_loss},
          {"seconds", rec.seconds},
          {"tokens_per_s", rec.tokens_per_s},
          {"validation", val},
          {"steps", steps}};
}

}  // namespace

nlohmann::json to_json(const TrainRunResult& r) {
  nlohmann::json runs = nlohmann::json::array(), control = nlohmann::json::array();
  for (const auto& x : r.runs) runs.push_back(record_json(x));
  for (const auto& x : r.control) control.push_back(record_json(x));
  const auto& o = r.options;
  return {{"command", r.command},
          {"checkpoint", o.checkpoint.string()},
          {"output", o.out_dir.string()},
          {"train", train::to_json(o.train)},
          {"train_data", o.train_tokens.empty()
                             ? fmt::format("{} / {} (seed preparation)", o.corpus, o.train_split)
                             : o.train_tokens.string()},
          {"validation",
           {{"corpus", r.eval.corpus},
            {"split", r.eval.split},
            {"protocol", ppl_protocol_name(o.ppl.protocol)},
            {"preparation", r.eval.preparation}}},
          {"threads", num_threads()},
          {"baseline_ppl", r.baseline_ppl},
          {"unigram_ppl", r.unigram_ppl},
          {"runs", runs},
          {"control", control},
          {"final_checkpoint", r.final_checkpoint},
          {"control_checkpoint", r.control_checkpoint},
          {"seconds", r.seconds}};
}

std::string to_markdown(const TrainRunResult& r) {
  const auto& o = r.options;
  std::string md = fmt::format("# ternlab {} of {}\n\n", r.command, o.checkpoint.string());
  md += fmt::format(
      "Training: {} steps per run, batch {} × {} tokens, AdamW lr {} (cosine, warm-up {}), weight decay {}, "
      "clip {}, {} parameters, weight quantizer {}, seed {}. Validation: {} / {}, protocol {}.\n\n",
      o.train.steps, o.train.batch, o.train.seq_len, o.train.adamw.lr, o.train.warmup,
      o.train.adamw.weight_decay, o.train.clip, o.train.precision == ParamPrecision::Bf16 ? "bf16" : "fp32",
      train::weight_quant_name(o.train.quant.weight_quant), o.train.seed, r.eval.corpus, r.eval.split,
      ppl_protocol_name(o.ppl.protocol));
  md += fmt::format("Baseline PPL {:.4f}; add-one unigram PPL of the training data {:.4f}.\n\n",
                    r.baseline_ppl, r.unigram_ppl);
  md +=
      "| run | target | latent sparsity | code sparsity | PPL before | PPL after | final loss | tok/s |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|\n";
  auto row = [&](const TrainRunRecord& x) {
    md += fmt::format("| {} | {}% | {:.2f}% | {:.2f}% | {:.4f} | {:.4f} | {:.4f} | {:.0f} |\n", x.name,
                      x.target_sparsity, 100 * x.latent_sparsity, 100 * x.code_sparsity,
                      x.ppl_before.value_or(NAN), x.ppl_after.value_or(NAN), x.final_loss, x.tokens_per_s);
  };
  for (const auto& x : r.runs) row(x);
  for (const auto& x : r.control) row(x);
  if (!r.control.empty())
    md += fmt::format(
        "\nThe control runs the same schedule, seed and token budget at 0% sparsity: the pruned model's "
        "final "
        "PPL {:.4f} against the control's {:.4f}.\n",
        r.runs.back().ppl_after.value_or(NAN), r.control.back().ppl_after.value_or(NAN));
  md += fmt::format("\nLoss per step: train_log.csv. {:.1f} s in all.\n", r.seconds);
  return md;
}

}  // namespace tl
