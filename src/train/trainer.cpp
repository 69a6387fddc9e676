#include "train/trainer.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "core/file.hpp"
#include "formats/checkpoint.hpp"
#include "formats/safetensors.hpp"

namespace tl::train {

namespace fs = std::filesystem;

void validate(const TrainConfig& c) {
  TL_CHECK(c.steps >= 1, "--steps must be at least 1, found {}", c.steps);
  TL_CHECK(c.batch >= 1, "--batch must be at least 1, found {}", c.batch);
  TL_CHECK(c.grad_accum >= 1 && c.batch % c.grad_accum == 0,
           "--grad-accum must be >= 1 and divide --batch ({}), found {}", c.batch, c.grad_accum);
  TL_CHECK(c.seq_len >= 2, "--seq-len must be at least 2, found {}", c.seq_len);
  validate(c.adamw);
  TL_CHECK(c.warmup >= 0 && c.warmup < c.steps, "--warmup must be in [0, steps = {}), found {}", c.steps,
           c.warmup);
  TL_CHECK(std::isfinite(c.clip) && c.clip >= 0, "--clip must be >= 0 (0: off), found {}", c.clip);
  TL_CHECK(std::isfinite(c.min_lr) && c.min_lr >= 0 && c.min_lr <= c.adamw.lr,
           "--min-lr must be in [0, lr = {}], found {}", c.adamw.lr, c.min_lr);
}

namespace {

// FNV-1a over the token bytes and the count: resuming on other data is an error.
std::string fingerprint(std::span<const int32_t> tokens) {
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  };
  mix(tokens.data(), tokens.size_bytes());
  const uint64_t n = tokens.size();
  mix(&n, sizeof n);
  return fmt::format("fnv1a64:{:016x}:{}", h, n);
}

bool all_finite(std::span<const float> x) {
  for (float v : x)
    if (!std::isfinite(v)) return false;
  return true;
}

}  // namespace

nlohmann::json to_json(const TrainConfig& c) {
  return {{"steps", c.steps},
          {"batch", c.batch},
          {"grad_accum", c.grad_accum},
          {"seq_len", c.seq_len},
          {"lr", c.adamw.lr},
          {"beta1", c.adamw.beta1},
          {"beta2", c.adamw.beta2},
          {"eps", c.adamw.eps},
          {"weight_decay", c.adamw.weight_decay},
          {"warmup", c.warmup},
          {"min_lr", c.min_lr},
          {"clip", c.clip},
          {"precision", c.precision == ParamPrecision::Bf16 ? "bf16" : "fp32"},
          {"weight_quant", weight_quant_name(c.quant.weight_quant)},
          {"act_quant", c.quant.act_quant},
          {"seed", c.seed}};
}

void chunk_inputs(std::span<const int32_t> tokens, int64_t chunk, int64_t T, int32_t* inp, int32_t* tgt) {
  const int32_t* c = tokens.data() + chunk * T;
  std::memcpy(inp, c, size_t(T) * sizeof(int32_t));
  for (int64_t t = 0; t + 1 < T; ++t) tgt[t] = c[t + 1];
  tgt[T - 1] = -1;  // the chunk's last token has no target inside the chunk
}

Trainer::Trainer(Model& model, const TrainConfig& cfg, std::span<const int32_t> tokens,
                 std::vector<TensorMask> masks, std::unique_ptr<StepBackend> backend)
    : model_(&model),
      cfg_((validate(cfg), cfg)),  // the config is checked before anything is built
      tokens_(tokens),
      masks_(std::move(masks)),
      backend_(std::move(backend)),
      opt_(model.params.size(), cfg.adamw, cfg.precision),
      rng_(cfg.seed) {
  if (!backend_) net_.emplace(model, cfg.quant);
  n_chunks_ = int64_t(tokens.size()) / cfg.seq_len;
  const int64_t micro = cfg.batch / cfg.grad_accum;
  TL_CHECK(n_chunks_ >= micro,
           "the training data has {} tokens = {} chunks of --seq-len {}, fewer than one micro-batch of {} "
           "(batch larger than the data)",
           tokens.size(), n_chunks_, cfg.seq_len, micro);
  const int64_t V = model.config.vocab_size;
  for (size_t i = 0; i < tokens.size(); ++i)
    TL_CHECK(tokens[i] >= 0 && tokens[i] < V,
             "training token {} at index {} is outside the vocabulary [0, {})", tokens[i], i, V);
  data_fingerprint_ = fingerprint(tokens);
  for (const auto& m : masks_) {
    TL_CHECK(model.has(m.name), "mask for '{}', which the model does not have", m.name);
    const ParamView& v = model.view(m.name);
    TL_CHECK(m.keep.size() == v.numel, "mask for '{}' has {} entries, the tensor {}", m.name, m.keep.size(),
             v.numel);
    mask_offsets_.emplace_back(v.offset, &m);
  }
  if (cfg.precision == ParamPrecision::Bf16) round_to_bf16(model.params);
  apply_masks_to(model.params);
  if (backend_) backend_->start(model, opt_.m(), opt_.v(), mask_offsets_);
}

void Trainer::sync_model() {
  if (backend_) backend_->download(model_->params, opt_.m(), opt_.v());
}

void Trainer::apply_masks_to(std::span<float> x) const {
  for (const auto& [off, m] : mask_offsets_) {
    float* p = x.data() + off;
    const uint8_t* k = m->keep.data();
    for (size_t i = 0; i < m->keep.size(); ++i)
      if (!k[i]) p[i] = 0.0f;
  }
}

StepLog Trainer::step() {
  TL_CHECK(!done(), "training: all {} steps are done", cfg_.steps);
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t T = cfg_.seq_len, micro = cfg_.batch / cfg_.grad_accum;
  const int64_t step = step_ + 1;
  batch_tokens_.resize(size_t(micro * T));
  batch_targets_.resize(size_t(micro * T));
  if (backend_)
    backend_->zero_grad();
  else
    net_->zero_grad();
  double loss_sum = 0;
  for (int64_t a = 0; a < cfg_.grad_accum; ++a) {
    for (int64_t b = 0; b < micro; ++b)  // random.choices(chunks, k=batch): with replacement
      chunk_inputs(tokens_, int64_t(rng_.below(uint64_t(n_chunks_))), T, batch_tokens_.data() + b * T,
                   batch_targets_.data() + b * T);
    double loss;
    if (backend_) {
      loss = backend_->forward_backward(batch_tokens_, batch_targets_, micro, T, a + 1 == cfg_.grad_accum);
    } else {
      loss = net_->forward(batch_tokens_, batch_targets_, micro, T);
      if (std::isfinite(loss)) net_->backward();
    }
    if (!std::isfinite(loss))
      throw NonFiniteError(step, fmt::format("training: the loss is {} at step {}", loss, step));
    loss_sum += loss;
  }
  const double lr = cosine_lr(step_, cfg_.steps, cfg_.adamw.lr, cfg_.warmup, cfg_.min_lr);
  double norm;
  if (backend_) {
    norm = backend_->finish_gradients(cfg_.grad_accum > 1 ? 1.0f / float(cfg_.grad_accum) : 1.0f, cfg_.clip,
                                      cfg_.precision);
    if (!std::isfinite(norm))
      throw NonFiniteError(step, fmt::format("training: the gradient norm is {} at step {}", norm, step));
    opt_.set_steps(opt_.steps() + 1);
    backend_->adamw_step(cfg_.adamw, cfg_.precision, opt_.steps(), lr);
  } else {
    std::span<float> grads = net_->grads();
    if (cfg_.grad_accum > 1) {  // each backward added the gradient of its micro-batch's mean
      const float inv = 1.0f / float(cfg_.grad_accum);
      for (auto& g : grads) g *= inv;
    }
    apply_masks_to(grads);  // pruned weights get no gradient
    if (cfg_.precision == ParamPrecision::Bf16) round_to_bf16(grads);
    norm = clip_grad_norm(grads, cfg_.clip);
    if (!std::isfinite(norm) || !all_finite(grads))
      throw NonFiniteError(step, fmt::format("training: the gradient norm is {} at step {}", norm, step));
    opt_.step(model_->params, grads, lr);
    apply_masks_to(model_->params);  // exactly zero, whatever rounding did
  }
  step_ = step;

  StepLog log;
  log.step = step;
  log.loss = loss_sum / double(cfg_.grad_accum);
  log.lr = lr;
  log.grad_norm = norm;
  log.tokens = cfg_.batch * T;
  log.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return log;
}

// ---------------------------------------------------------------------------------------------------------
// Checkpoints

namespace {

constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kMaskFile = "masks.safetensors";

std::string hex64(uint64_t x) {
  return fmt::format("{:016x}", x);
}
uint64_t from_hex64(const nlohmann::json& j) {
  const std::string s = j.get<std::string>();
  TL_CHECK(s.size() == 16, "trainer state: bad RNG word '{}'", s);
  return std::stoull(s, nullptr, 16);
}

std::span<const uint8_t> bytes_of(std::span<const float> x) {
  return {reinterpret_cast<const uint8_t*>(x.data()), x.size_bytes()};
}

}  // namespace

void Trainer::save_state(const fs::path& dir) {
  sync_model();
  fs::path tmp = dir;
  tmp += ".tmp";
  fs::path old = dir;
  old += ".old";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  save_checkpoint(*model_, tmp,
                  SaveOptions{CheckpointLayout::Master, DType::F32, 0, true});  // scales: the run's
  const int64_t n = int64_t(model_->params.size());
  std::vector<TensorBlob> moments = {{{"adamw.m", DType::F32, {n}}, bytes_of(opt_.m())},
                                     {{"adamw.v", DType::F32, {n}}, bytes_of(opt_.v())}};
  // A finished run takes no more steps: its moments are never read again, and at 2B parameters they are
  // two thirds of the state (19 GB of 29), once per level of a progressive fine-tune.
  const bool with_moments = !done();
  if (with_moments) write_safetensors(tmp / kOptimizerFile, moments, {{"format", "ternlab-adamw"}});
  if (!masks_.empty()) {
    std::vector<TensorBlob> blobs;
    for (const auto& m : masks_) {
      const ParamView& v = model_->view(m.name);
      blobs.push_back({{m.name, DType::U8, v.shape}, m.keep});
    }
    write_safetensors(tmp / kMaskFile, blobs, {{"format", "ternlab-masks"}});
  }
  const Rng::State rs = rng_.state();
  nlohmann::json j = {{"format", "ternlab-trainer-state"},
                      {"version", 1},
                      {"step", step_},
                      {"optimizer_steps", opt_.steps()},
                      {"config", to_json(cfg_)},
                      {"data", data_fingerprint_},
                      {"chunks", n_chunks_},
                      {"num_params", n},
                      {"masked_tensors", masks_.size()},
                      {"moments", with_moments},
                      {"rng",
                       {{"s", {hex64(rs.s[0]), hex64(rs.s[1]), hex64(rs.s[2]), hex64(rs.s[3])}},
                        {"spare", fmt::format("{:a}", rs.spare)},
                        {"has_spare", rs.has_spare}}}};
  write_file_atomic(tmp / kStateFile, j.dump(2) + "\n");
  // Swap the complete directory in: the previous checkpoint survives any failure before this point.
  fs::remove_all(old);
  if (fs::exists(dir)) fs::rename(dir, old);
  fs::rename(tmp, dir);
  fs::remove_all(old);
}

std::optional<fs::path> find_saved_state(const fs::path& dir) {
  fs::path tmp = dir, old = dir;
  tmp += ".tmp";
  old += ".old";
  // save_state writes the state file last and atomically, so a directory that has one is whole. A kill
  // between save_state's two renames leaves the new state in .tmp and the previous one in .old.
  for (const fs::path& d : {dir, tmp, old}) {
    std::error_code ec;
    if (fs::is_regular_file(d / kStateFile, ec)) return d;
  }
  return std::nullopt;
}

void Trainer::load_state(const fs::path& dir) {
  const fs::path sf = dir / kStateFile;
  TL_CHECK(fs::is_regular_file(sf), "resume: {} has no {}", dir.string(), kStateFile);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(sf));
    TL_CHECK(j.at("format") == "ternlab-trainer-state" && j.at("version") == 1,
             "resume: {} is not a ternlab trainer state (version 1)", sf.string());
    TL_CHECK(j.at("config") == to_json(cfg_),
             "resume: the checkpoint was made with other training options:\n  saved {}\n  now   {}",
             j.at("config").dump(), to_json(cfg_).dump());
    TL_CHECK(j.at("data") == data_fingerprint_, "resume: the checkpoint was trained on other data ({} vs {})",
             j.at("data").get<std::string>(), data_fingerprint_);
    TL_CHECK(j.at("num_params") == model_->params.size() && j.at("masked_tensors") == masks_.size(),
             "resume: the checkpoint's model or masks differ from this run's");
  } catch (const nlohmann::json::exception& e) {
    fail("resume: {} is malformed: {}", sf.string(), e.what());
  }
  const Model saved = load_checkpoint(dir);
  TL_CHECK(saved.params.size() == model_->params.size() && saved.views.size() == model_->views.size(),
           "resume: the checkpoint in {} has another model shape", dir.string());
  for (size_t i = 0; i < saved.views.size(); ++i)
    TL_CHECK(saved.views[i].name == model_->views[i].name && saved.views[i].offset == model_->views[i].offset,
             "resume: tensor {} differs from this model's layout", saved.views[i].name);
  if (j.value("moments", true)) {
    const SafetensorsFile of(dir / kOptimizerFile);
    const TensorInfo* m = of.find("adamw.m");
    const TensorInfo* v = of.find("adamw.v");
    TL_CHECK(m && v && m->dtype == DType::F32 && v->dtype == DType::F32 && m->numel() == opt_.m().size() &&
                 v->numel() == opt_.v().size(),
             "resume: {} does not hold the AdamW moments of this model", (dir / kOptimizerFile).string());
    of.read_f32(*m, opt_.m());
    of.read_f32(*v, opt_.v());
  } else {  // a finished run (no step left to take with them)
    TL_CHECK(j.at("step").get<int64_t>() == cfg_.steps,
             "resume: {} has no AdamW moments but stopped at step {} of {}", sf.string(),
             j.at("step").get<int64_t>(), cfg_.steps);
    std::fill(opt_.m().begin(), opt_.m().end(), 0.0f);
    std::fill(opt_.v().begin(), opt_.v().end(), 0.0f);
  }
  if (!masks_.empty()) {  // the masks must be those of this run
    const SafetensorsFile mf(dir / kMaskFile);
    for (const auto& mk : masks_) {
      const TensorInfo* t = mf.find(mk.name);
      TL_CHECK(t && t->dtype == DType::U8 && t->numel() == mk.keep.size(), "resume: {} lacks the mask of {}",
               (dir / kMaskFile).string(), mk.name);
      const auto b = mf.bytes(*t);
      TL_CHECK(std::equal(b.begin(), b.end(), mk.keep.begin()),
               "resume: the mask of {} differs from this run's", mk.name);
    }
  }
  std::copy(saved.params.begin(), saved.params.end(),
            model_->params.begin());  // TrainModel aliases the buffer; a backend is re-started below
  step_ = j.at("step").get<int64_t>();
  opt_.set_steps(j.at("optimizer_steps").get<int64_t>());
  Rng::State rs{};
  for (int i = 0; i < 4; ++i) rs.s[i] = from_hex64(j.at("rng").at("s").at(i));
  rs.spare = std::strtod(j.at("rng").at("spare").get<std::string>().c_str(), nullptr);
  rs.has_spare = j.at("rng").at("has_spare").get<bool>();
  rng_.set_state(rs);
  TL_CHECK(step_ >= 0 && step_ <= cfg_.steps, "resume: step {} outside [0, {}]", step_, cfg_.steps);
  if (backend_) backend_->start(*model_, opt_.m(), opt_.v(), mask_offsets_);  // the restored state
}

double eval_loss(Model& model, const TrainOptions& quant, std::span<const int32_t> tokens, int64_t seq_len,
                 int64_t max_chunks, int64_t batch) {
  TL_CHECK(seq_len >= 2 && batch >= 1, "eval_loss: seq_len {} batch {}", seq_len, batch);
  int64_t n = int64_t(tokens.size()) / seq_len;
  if (max_chunks >= 0) n = std::min(n, max_chunks);
  TL_CHECK(n >= 1, "eval_loss: fewer than {} tokens", seq_len);
  TrainModel<float> net(model, quant);
  std::vector<int32_t> inp, tgt;
  double sum = 0;
  int64_t count = 0;
  for (int64_t c0 = 0; c0 < n; c0 += batch) {
    const int64_t b = std::min(batch, n - c0);
    inp.resize(size_t(b * seq_len));
    tgt.resize(size_t(b * seq_len));
    for (int64_t i = 0; i < b; ++i)
      chunk_inputs(tokens, c0 + i, seq_len, inp.data() + i * seq_len, tgt.data() + i * seq_len);
    const double loss = net.forward(inp, tgt, b, seq_len);
    sum += loss * double(net.num_targets());
    count += net.num_targets();
  }
  return sum / double(count);
}

}  // namespace tl::train
