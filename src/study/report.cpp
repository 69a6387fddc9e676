// The study's report: one document (headings, paragraphs, tables, plots) rendered as Markdown (plots as
// links to the SVG files beside it) and as one self-contained HTML page (plots inline).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

#include "core/error.hpp"
#include "report/svg.hpp"
#include "study/internal.hpp"

namespace tl::study {

namespace {

using nlohmann::json;

struct Block {
  enum Kind { Heading, Paragraph, Table, Plot, Pre } kind;
  std::string text;                            // heading / paragraph / pre text; plot file name
  int level = 2;                               // heading level
  std::vector<std::vector<std::string>> rows;  // table: rows[0] is the header
};

struct Doc {
  std::vector<Block> blocks;
  void h(int level, std::string t) { blocks.push_back({Block::Heading, std::move(t), level, {}}); }
  void p(std::string t) { blocks.push_back({Block::Paragraph, std::move(t), 0, {}}); }
  void pre(std::string t) { blocks.push_back({Block::Pre, std::move(t), 0, {}}); }
  void plot(std::string file) { blocks.push_back({Block::Plot, std::move(file), 0, {}}); }
  void table(std::vector<std::vector<std::string>> rows) {
    blocks.push_back({Block::Table, "", 0, std::move(rows)});
  }
};

double d(const json& j) {
  return j.is_null() ? NAN : j.get<double>();
}

std::string f4(double x) {
  if (!std::isfinite(x)) return "n/a";
  return std::fabs(x) >= 1000 ? fmt::format("{:.0f}", x) : fmt::format("{:.4g}", x);  // counts in full
}

// "12.34 [11.9, 12.8]" from a summary's PPL and its window interval
std::string ppl_text(const json& s) {
  if (s.is_null() || !s.contains("ppl")) return "n/a";
  const auto& ci = s.at("ppl_ci95_windows");
  return fmt::format("{:.4g} [{:.4g}, {:.4g}]", d(s.at("ppl")), d(ci[0]), d(ci[1]));
}

// "×0.912 [0.89, 0.93]" from an effect
std::string ratio_text(const json& e) {
  if (e.is_null()) return "n/a";
  const auto& ci = e.at("ppl_ratio_ci95");
  return fmt::format("×{:.4g} [{:.4g}, {:.4g}]", d(e.at("ppl_ratio")), d(ci[0]), d(ci[1]));
}

std::string pct(double x) {
  return std::isfinite(x) ? fmt::format("{:.2f}%", 100 * x) : "n/a";
}

std::string mean_text(const json& m, bool percent = false) {
  if (m.is_null()) return "n/a";
  const double mean = d(m.at("mean")), lo = d(m.at("ci95")[0]), hi = d(m.at("ci95")[1]);
  if (percent)
    return m.at("n").get<int>() > 1 ? fmt::format("{} [{}, {}]", pct(mean), pct(lo), pct(hi)) : pct(mean);
  return m.at("n").get<int>() > 1 ? fmt::format("{} [{}, {}]", f4(mean), f4(lo), f4(hi)) : f4(mean);
}

std::string study_ratio_text(const json& v) {
  const json& s = v.at("study");
  if (s.contains("ppl_ratio") && !s.at("ppl_ratio").is_null())
    return fmt::format("×{:.3f} — {}", d(s.at("ppl_ratio")), s.at("text").get<std::string>());
  return s.at("text").get<std::string>();
}

std::string verdict_word(const json& v) {
  return "**" + v.at("verdict").get<std::string>() + "**";
}

const char* kRule =
    "Every effect is a difference of mean NLL (nats per token), treatment minus reference, on the same "
    "windows; "
    "its PPL ratio is exp(Δ). Intervals are 95% percentile intervals of a paired bootstrap that resamples "
    "whole "
    "windows (never tokens) and, for arms with several seeds, the seeds (paired where the arms share their "
    "data "
    "order). δ is the smallest effect of interest. A claim **holds** when its effect lies on the claimed "
    "side "
    "(the interval excludes zero) and is at least δ, and it beats its control (treatment − control also lies "
    "on "
    "the claimed side and is at least δ). It is **confounded** when the effect is there but the control "
    "gives as "
    "much: treatment − control lies on the other side, or within ±δ, or is smaller than δ, or includes zero "
    "while the control alone lies on the claimed side. It **does not hold** when the effect lies on the "
    "other "
    "side, or its whole interval lies within ±δ, or it is real but smaller than δ. Otherwise it is "
    "**inconclusive**, and the report says about how many windows would decide it (the interval shrinking as "
    "1/√windows). Equivalence claims (a deployed file is the model it came from) hold when the difference "
    "lies "
    "within ±δ and do not hold when it lies beyond. The criticality claim holds when λ's interval lies "
    "inside "
    "±0.05 (the study's band) and no null model's does; it is confounded when a null model's does too.";

Doc build(const json& r, const json& meta) {
  Doc doc;
  const json& cfg = r.at("config");
  doc.h(1, fmt::format("ternlab study of {}", cfg.at("model").get<std::string>()));
  doc.p(
      fmt::format("The RPT study's claims (rpt-spec §3-§7), each beside the control it lacked, over {} "
                  "seeds. Command: `{}`.",
                  cfg.at("seeds").get<int>(), meta.value("command", std::string("ternlab study"))));
  const json& b = cfg.at("budget");
  std::vector<std::vector<std::string>> setup = {{"", ""}};
  setup.push_back({"model sha256 (config.json and weights)", cfg.at("model_sha256").get<std::string>()});
  setup.push_back({"tokenizer sha256", cfg.at("tokenizer_sha256").get<std::string>()});
  setup.push_back({"fine-tuning corpus", cfg.at("train_corpus").get<std::string>()});
  for (const auto& s : r.at("sets"))
    setup.push_back(
        {"evaluation: " + s.at("name").get<std::string>(),
         fmt::format("{} ({} windows)", s.at("role").get<std::string>(), s.at("windows").get<int64_t>())});
  setup.push_back({"seeds / base seed",
                   fmt::format("{} / {}", cfg.at("seeds").get<int>(), cfg.at("seed").get<uint64_t>())});
  setup.push_back(
      {"scale", fmt::format("{}: {} windows of {} tokens; C2 {} steps × {} at lr {}; C3 {} steps × {}",
                            b.at("scale").get<std::string>(), b.at("windows").get<int64_t>(),
                            b.at("seq_len").get<int64_t>(), b.at("c2_steps").get<int64_t>(),
                            b.at("c2_batch").get<int64_t>(), d(b.at("lr")), b.at("c3_steps").get<int64_t>(),
                            b.at("c3_batch").get<int64_t>())});
  setup.push_back(
      {"device", fmt::format("{} ({} threads), master weights {}", meta.value("device", std::string("?")),
                             meta.value("threads", 0), cfg.at("precision").get<std::string>())});
  setup.push_back({"bootstrap / δ", fmt::format("{} resamples / {} nats", cfg.at("bootstrap").get<int>(),
                                                d(cfg.at("min_effect")))});
  setup.push_back({"version", "ternlab " + cfg.at("ternlab_version").get<std::string>()});
  setup.push_back({"time", fmt::format("{:.0f} s of runs in all ({} run this session, {} reused)",
                                       meta.value("seconds_all_runs", 0.0), meta.value("runs_done", 0),
                                       meta.value("runs_skipped", 0))});
  doc.table(setup);

  doc.h(2, "Verdicts");
  std::vector<std::vector<std::string>> vt = {{"claim", "the study", "ternlab", "verdict"}};
  for (const auto& c : r.at("claims"))
    for (const auto& v : c.at("verdicts")) {
      std::string ours;
      if (v.contains("effect"))
        ours = ratio_text(v.at("effect"));
      else if (v.contains("lambda"))
        ours = fmt::format("λ {:+.4f} [{:+.4f}, {:+.4f}]", d(v.at("lambda").at("value")),
                           d(v.at("lambda").at("ci95")[0]), d(v.at("lambda").at("ci95")[1]));
      vt.push_back({v.at("id").get<std::string>() + ": " + v.at("claim").get<std::string>(),
                    study_ratio_text(v), ours, verdict_word(v)});
    }
  doc.table(vt);
  doc.h(3, "The verdict rule");
  doc.p(kRule);
  auto reasons = [&](const json& c) {
    for (const auto& v : c.at("verdicts"))
      doc.p(fmt::format("{} — {}: {}{}", v.at("id").get<std::string>(), verdict_word(v),
                        v.at("reason").get<std::string>(),
                        v.contains("control") && !v.at("control").is_null()
                            ? fmt::format(" (control: {})", v.at("control").get<std::string>())
                            : std::string()));
  };

  for (const auto& c : r.at("claims")) {
    const std::string id = c.at("id");
    doc.h(2, c.at("title").get<std::string>());
    if (id == "c1") {
      doc.p(
          "Each level is pruned from the original weights (as the study's raw-pruning notebook). Protocol A "
          "is the "
          "study's 8 sentences; the primary set is held-out text under the study's Protocol B preparation. "
          "Code zeros "
          "and changed codes are counted under the real quantizer (absmean, rpt-spec §3.3).");
      std::vector<std::vector<std::string>> t = {{"level", "method", "latent zeros", "code zeros",
                                                  "codes changed", "PPL Protocol A", "vs baseline",
                                                  "PPL primary", "vs baseline"}};
      for (const auto& row : c.at("rows")) {
        const json& sa = row.at("sets").at(kProtocolA);
        const std::string primary = r.at("sets")[1].at("name");
        const json& sp = row.at("sets").at(primary);
        t.push_back({fmt::format("{:g}%", d(row.at("level"))), row.at("method"),
                     mean_text(row.at("prune").at("latent_sparsity_after"), true),
                     mean_text(row.at("prune").at("code_zero_after"), true),
                     mean_text(row.at("prune").at("codes_changed")), ppl_text(sa),
                     ratio_text(sa.at("vs_baseline")), ppl_text(sp), ratio_text(sp.at("vs_baseline"))});
      }
      doc.table(t);
      doc.plot("c1_pruning.svg");
      doc.plot("c1_protocol_a.svg");
    } else if (id == "c2") {
      doc.p(
          "Each chain prunes its current weights at every level (the study's sampled threshold; random: as "
          "many per "
          "tensor at random; control: nothing), then fine-tunes with a fresh AdamW and cosine schedule "
          "(rpt-spec §4.2). The control is the same fine-tune at 0% sparsity with the same tokens and seeds. "
          "Pruned weights stay zero (masks kept; the study's notebook kept none).");
      std::vector<std::vector<std::string>> t = {{"level", "arm", "latent zeros", "code zeros",
                                                  "PPL before FT", "PPL after FT", "vs baseline",
                                                  "final loss", "verdict"}};
      const std::string primary = r.at("sets")[1].at("name");
      for (const auto& row : c.at("rows"))
        for (const std::string arm : {"prune", "random", "control"}) {
          const json& a = row.at("arms").at(arm);
          const std::string level = arm == "control" ? fmt::format("0% (as {:g}%)", d(row.at("target")))
                                                     : fmt::format("{:g}%", d(row.at("target")));
          t.push_back({level, arm, mean_text(a.at("latent_sparsity"), true),
                       mean_text(a.at("code_zero"), true), ppl_text(a.at("before")),
                       ppl_text(a.at("after").at(primary)),
                       ratio_text(a.at("after").at(primary).at("vs_baseline")), mean_text(a.at("final_loss")),
                       arm == "prune" ? "**" + row.at("verdict").get<std::string>() + "**" : ""});
        }
      doc.table(t);
      doc.plot("c2_finetune.svg");
      for (const auto& v : c.at("level_verdicts"))
        doc.p(fmt::format("{} — {}: {}", v.at("id").get<std::string>(), verdict_word(v),
                          v.at("reason").get<std::string>()));
      continue;
    } else if (id == "domain") {
      doc.p(
          "The study fine-tuned on WikiText-2 train and evaluated on WikiText-2 validation. Here the same "
          "fine-tunes "
          "(C2, last level) are scored on the held-out split of the fine-tuning corpus and on corpora never "
          "fine-tuned on.");
      std::vector<std::vector<std::string>> t = {
          {"set", "role", "pruned + FT vs baseline", "0% FT vs baseline", "pruned vs 0% control", "verdict"}};
      for (const auto& row : c.at("rows"))
        t.push_back({row.at("set"), row.at("role"), ratio_text(row.at("prune_vs_baseline")),
                     ratio_text(row.at("control_vs_baseline")), ratio_text(row.at("prune_vs_control")),
                     "**" + row.at("verdict").get<std::string>() + "**"});
      doc.table(t);
    } else if (id == "c3") {
      doc.p(
          "The deploy script's recipe (rpt-spec §5): s_orig captured before pruning, the study's threshold "
          "at 5% then "
          "10% of the current weights, the rpt-fixed STE fine-tune (training's forward sees code·s_orig·(1 − "
          "z)), then "
          "the snap. 'Training view' scores what training's forward computes; 'study view' scores the "
          "latents with "
          "transformers' own quantizer, as the study's 'PPL after FT' did.");
      for (const std::string arm : {"deploy", "control"}) {
        const json& a = c.at("arms").at(arm);
        doc.h(3, arm == "deploy" ? "Deploy recipe" : "Control: the same recipe at 0%");
        std::vector<std::vector<std::string>> t = {{"level", "latent zeros", "before (training view)",
                                                    "before (study view)", "after (training view)",
                                                    "after (study view)", "final loss"}};
        for (size_t i = 0; i < a.at("levels").size(); ++i) {
          const json& l = a.at("levels")[i];
          const std::string level = arm == "control" ? fmt::format("0% (as {:g}%)", d(c.at("levels")[i]))
                                                     : fmt::format("{:g}%", d(l.at("target")));
          t.push_back({level, mean_text(l.at("latent_sparsity"), true),
                       ppl_text(l.at("before").at("training")), ppl_text(l.at("before").at("study")),
                       ppl_text(l.at("after").at("training")), ppl_text(l.at("after").at("study")),
                       mean_text(l.at("final_loss"))});
        }
        doc.table(t);
        std::vector<std::vector<std::string>> s = {{"", "value"}};
        s.push_back({"code sparsity after the snap", mean_text(a.at("snap").at("code_sparsity"), true)});
        s.push_back({"weights the snap changed", mean_text(a.at("snap").at("changed"))});
        s.push_back({"ternary fraction (verified)", mean_text(a.at("snap").at("ternary_fraction"), true)});
        for (const auto& [set, x] : a.at("snapped").items())
          s.push_back(
              {"snapped PPL, " + set, ppl_text(x) + " " + ratio_text(x.at("vs_baseline")) + " vs baseline"});
        s.push_back({"packed save + reload vs in memory", ratio_text(a.at("reload"))});
        for (const auto& [kind, x] : a.at("gguf").items())
          s.push_back(
              {"GGUF " + kind, x.contains("refused")
                                   ? "refused: " + x.at("refused").get<std::string>()
                                   : ppl_text(x) + ", " + ratio_text(x.at("vs_snapped")) +
                                         fmt::format(" vs snapped, {} bytes", x.at("bytes").get<int64_t>())});
        s.push_back(
            {"Fix-8 scales (the study's I2_S)",
             ppl_text(a.at("fix8")) + ", " + ratio_text(a.at("fix8").at("vs_snapped")) + " vs snapped"});
        doc.table(s);
        std::string gens;
        for (const auto& gj : a.at("generations"))
          gens +=
              fmt::format("{} ▸ {}\n", gj.at("prompt").get<std::string>(), gj.at("text").get<std::string>());
        if (!gens.empty()) {
          doc.p("Greedy generations from the I2_S GGUF on the fast engine (seed 0):");
          doc.pre(gens);
        }
      }
      for (const auto& v : c.at("verdicts"))
        if (v.contains("as_the_study_measured"))
          doc.p(fmt::format(
              "As the study measured it (before the snap with transformers' quantizer on the latents), "
              "the snap 'changes' PPL by {} — the artefact rpt-spec §5.4 predicted.",
              ratio_text(v.at("as_the_study_measured"))));
    } else if (id == "c4") {
      doc.p(fmt::format(
          "{} texts of the primary corpus, {} noise seeds per text, ε = {} (absolute σ of the embedding "
          "noise). 'Study' columns are the study's computation exactly (ε = 0.01, seed index 0); λ over all "
          "seeds has a bootstrap interval over texts.",
          c.at("texts").get<int64_t>(), c.at("seeds").get<int>(), c.at("eps").dump()));
      std::vector<std::vector<std::string>> t = {
          {"model", "study λ", "study amplification", "mean BR", "labels", "λ, all seeds [95%]", "FTLE"}};
      for (const auto& [name, m] : c.at("models").items()) {
        const json& s = m.at("study");
        std::string ftle;
        for (const auto& f : m.at("ftle"))
          ftle += fmt::format("{}ε={:g}: {:+.4f}", ftle.empty() ? "" : "; ", d(f.at("eps_rel")),
                              d(f.at("median")));
        t.push_back(
            {name, fmt::format("{:+.5f}", d(s.at("lambda"))),
             fmt::format("{:.4f}x", d(s.at("amplification"))), f4(d(s.at("avg_br"))),
             fmt::format("{} / {} / {}", s.at("br_label").get<std::string>(),
                         s.at("lambda_label").get<std::string>(), s.at("soc_verdict").get<std::string>()),
             fmt::format("{:+.5f} [{:+.5f}, {:+.5f}]", d(m.at("lambda_all_seeds").at("value")),
                         d(m.at("lambda_all_seeds").at("ci95")[0]),
                         d(m.at("lambda_all_seeds").at("ci95")[1])),
             ftle});
      }
      doc.table(t);
      {
        std::string f;
        for (const auto& [name, m] : c.at("models").items())
          for (const auto& x : m.at("ftle"))
            f += fmt::format("{}{} {:+.3f} (ε = {:g})", f.empty() ? "" : ", ", name, d(x.at("median")),
                             d(x.at("eps_rel")));
        if (!f.empty())
          doc.p(
              "The finite-time estimate renormalises the perturbation at every layer and averages its log "
              "growth: " +
              f +
              " per layer. A positive value means a small relative perturbation grows through the blocks; "
              "the "
              "study's λ is the endpoint ratio of the first and last block's δ divided by L − 1 and does not "
              "see "
              "the growth between the injection and block 0. The verdict is on the study's own criterion "
              "(|λ| < 0.05) and whether it tells the trained model from the null models, not on whether the "
              "network is at a dynamical critical point.");
      }
      doc.plot("c4_delta.svg");
      doc.plot("c4_lambda.svg");
    } else if (id == "c5") {
      doc.p(
          "The study's rule: per layer and sequence, the block's correction r = x_out − x_in below the P-th "
          "percentile of |r| is zeroed; per-token: the quantile over each token's channels; random: the same "
          "count "
          "at random positions (seeded). Baseline " +
          ppl_text(c.at("baseline")) + ".");
      std::vector<std::vector<std::string>> t = {{"mode", "P", "zeroed", "PPL", "vs baseline"}};
      for (const auto& row : c.at("rows"))
        t.push_back({row.at("mode"), fmt::format("{:g}", d(row.at("level"))),
                     fmt::format("{:.1f}%", d(row.at("pct_zeroed"))), ppl_text(row),
                     ratio_text(row.at("vs_baseline"))});
      doc.table(t);
      doc.plot("c5_actprune.svg");
    }
    reasons(c);
  }

  if (meta.contains("timings")) {
    doc.h(2, "Time per claim");
    std::map<std::string, std::pair<double, double>> by;  // seconds, peak resident memory
    for (const auto& [k, v] : meta.at("timings").items()) {
      auto& [sec, rss] = by[k.substr(0, k.find('/'))];
      sec += v.at("seconds").get<double>();
      rss = std::max(rss, v.at("max_rss_gib").get<double>());
    }
    std::vector<std::vector<std::string>> t = {
        {"runs", "seconds", "peak resident memory (GiB, the process so far)"}};
    for (const auto& [k, v] : by)
      t.push_back({k, fmt::format("{:.1f}", v.first), fmt::format("{:.2f}", v.second)});
    doc.table(t);
  }
  return doc;
}

std::string html_escape(const std::string& s) {
  return xml_escape(s);
}

// **bold** and `code` spans (the only inline marks the report uses) for HTML.
std::string inline_html(const std::string& s) {
  std::string o, t = html_escape(s);
  bool bold = false, code = false;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t.compare(i, 2, "**") == 0) {
      o += bold ? "</b>" : "<b>";
      bold = !bold;
      ++i;
    } else if (t[i] == '`') {
      o += code ? "</code>" : "<code>";
      code = !code;
    } else {
      o += t[i];
    }
  }
  return o;
}

std::string md_cell(const std::string& s) {
  std::string o;
  for (char c : s) o += c == '|' ? std::string("\\|") : c == '\n' ? std::string(" ") : std::string(1, c);
  return o;
}

}  // namespace

std::string report_markdown(const json& r, const json& meta) {
  const Doc doc = build(r, meta);
  std::string o;
  for (const auto& b : doc.blocks) {
    switch (b.kind) {
      case Block::Heading:
        o += std::string(size_t(b.level), '#') + " " + b.text + "\n\n";
        break;
      case Block::Paragraph:
        o += b.text + "\n\n";
        break;
      case Block::Pre:
        o += "```\n" + b.text + "```\n\n";
        break;
      case Block::Plot:
        o += fmt::format("![{0}]({0})\n\n", b.text);
        break;
      case Block::Table:
        for (size_t i = 0; i < b.rows.size(); ++i) {
          o += "|";
          for (const auto& c : b.rows[i]) o.append(" ").append(md_cell(c)).append(" |");
          o += "\n";
          if (i == 0) {
            o += "|";
            for (size_t k = 0; k < b.rows[i].size(); ++k) o += "---|";
            o += "\n";
          }
        }
        o += "\n";
        break;
    }
  }
  return o;
}

std::string report_html(const json& r, const json& meta) {
  const Doc doc = build(r, meta);
  std::map<std::string, std::string> plots;
  for (auto& [name, svg] : report_plots(r)) plots[name] = svg;
  std::string o =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ternlab study</title>\n<style>"
      "body{font-family:Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
      "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:4px "
      "8px;"
      "text-align:left;vertical-align:top}th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;white-"
      "space:"
      "pre-wrap}code{background:#f3f3f3;padding:0 3px}svg{max-width:100%;height:auto}</style></head><body>\n";
  for (const auto& b : doc.blocks) {
    switch (b.kind) {
      case Block::Heading:
        o += fmt::format("<h{0}>{1}</h{0}>\n", b.level, inline_html(b.text));
        break;
      case Block::Paragraph:
        o += "<p>" + inline_html(b.text) + "</p>\n";
        break;
      case Block::Pre:
        o += "<pre>" + html_escape(b.text) + "</pre>\n";
        break;
      case Block::Plot: {
        const auto it = plots.find(b.text);
        if (it == plots.end()) break;
        const std::string& svg = it->second;
        const size_t start = svg.find("<svg");  // inline: without the XML declaration
        o += "<figure>" + svg.substr(start == std::string::npos ? 0 : start) + "</figure>\n";
        break;
      }
      case Block::Table:
        o += "<table>\n";
        for (size_t i = 0; i < b.rows.size(); ++i) {
          o += "<tr>";
          for (const auto& c : b.rows[i])
            o += fmt::format("<{0}>{1}</{0}>", i == 0 ? "th" : "td", inline_html(c));
          o += "</tr>\n";
        }
        o += "</table>\n";
        break;
    }
  }
  o += "</body></html>\n";
  return o;
}

namespace {

// A point of a PPL series with its window interval as the whisker (a percentile interval of few windows may
// miss the point estimate by a hair: the whisker still holds it).
void add_point(Series& s, double x, const json& summary) {
  s.x.push_back(x);
  s.y.push_back(d(summary.at("ppl")));
  s.y_lo.push_back(std::min(s.y.back(), d(summary.at("ppl_ci95_windows")[0])));
  s.y_hi.push_back(std::max(s.y.back(), d(summary.at("ppl_ci95_windows")[1])));
}

// One series per value of row[key] (a method, a mode), in order of appearance, each starting at x = 0 with
// the baseline; x = row["level"], y = the summary that summary_of picks from the row.
std::vector<Series> series_by(const json& rows, const std::string& key, const json& baseline,
                              const std::function<const json&(const json&)>& summary_of) {
  std::vector<Series> out;
  std::map<std::string, size_t> index;
  for (const auto& row : rows) {
    const std::string name = row.at(key);
    if (!index.count(name)) {
      index[name] = out.size();
      out.push_back(Series{name, {}, {}, {}, {}});
      add_point(out.back(), 0, baseline);
    }
    add_point(out[index[name]], d(row.at("level")), summary_of(row));
  }
  return out;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> report_plots(const json& r) {
  std::vector<std::pair<std::string, std::string>> out;
  const std::string primary = r.at("sets")[1].at("name");
  for (const auto& c : r.at("claims")) {
    const std::string id = c.at("id");
    if (id == "c1") {
      for (const auto& [set, file, title] :
           {std::tuple{primary, "c1_pruning.svg", "Raw pruning: PPL on " + primary},
            std::tuple{std::string(kProtocolA), "c1_protocol_a.svg",
                       std::string("Raw pruning: PPL under Protocol A")}}) {
        const std::string name = set;  // a structured binding cannot be captured (C++20 before clang 16)
        const std::vector<Series> s =
            series_by(c.at("rows"), "method", r.at("baseline").at(name),
                      [&name](const json& row) -> const json& { return row.at("sets").at(name); });
        PlotOptions o;
        o.title = title;
        o.x_label = "target sparsity (% of the non-zero latent weights)";
        o.y_label = "PPL (95% interval)";
        o.log_y = true;
        o.hline = d(r.at("baseline").at(set).at("ppl"));
        o.hline_label = "unpruned";
        out.emplace_back(file, line_plot_svg(s, o));
      }
    } else if (id == "c2") {
      std::vector<Series> s = {Series{"pruned + FT", {}, {}, {}, {}},
                               Series{"random pruned + FT", {}, {}, {}, {}},
                               Series{"0% + FT (control)", {}, {}, {}, {}}};
      const char* arms[] = {"prune", "random", "control"};
      for (const auto& row : c.at("rows"))
        for (int a = 0; a < 3; ++a)
          add_point(s[size_t(a)], d(row.at("target")), row.at("arms").at(arms[a]).at("after").at(primary));
      PlotOptions o;
      o.title = "Progressive pruning + fine-tune: PPL on " + primary;
      o.x_label = "target sparsity of the level (the control: 0%, same tokens)";
      o.y_label = "PPL after the level's fine-tune";
      o.log_y = true;
      o.hline = d(r.at("baseline").at(primary).at("ppl"));
      o.hline_label = "before any fine-tune";
      out.emplace_back("c2_finetune.svg", line_plot_svg(s, o));
    } else if (id == "c4") {
      std::vector<Series> s;
      for (const auto& [name, m] : c.at("models").items()) {
        Series x;
        x.name = name;
        const auto D = m.at("delta_profile");
        for (size_t l = 0; l < D.size(); ++l) {
          const double v = d(D[l]);
          if (!(v > 0)) continue;  // a log axis cannot show a vanished perturbation
          x.x.push_back(double(l));
          x.y.push_back(v);
        }
        if (!x.x.empty()) s.push_back(std::move(x));
      }
      std::vector<Series> lam;
      for (const auto& [name, m] : c.at("models").items()) {
        Series x;
        x.name = name;
        for (const auto& e : m.at("per_eps"))
          if (!e.at("lambda").is_null()) {
            x.x.push_back(std::log10(d(e.at("eps"))));
            x.y.push_back(d(e.at("lambda")));
          }
        if (!x.x.empty()) lam.push_back(std::move(x));
      }
      if (!lam.empty()) {
        PlotOptions o;
        o.title = "λ (the study's formula on the mean profile) against the noise size";
        o.x_label = "log10 ε (absolute σ of the embedding noise)";
        o.y_label = "λ per layer";
        o.hline = 0.05;
        o.hline_label = "|λ| = 0.05 (the study's band)";
        out.emplace_back("c4_lambda.svg", line_plot_svg(lam, o));
      }
      if (!s.empty()) {
        PlotOptions o;
        o.title = "Perturbation profile δ_l (ε = 0.01, the study's computation)";
        o.x_label = "layer";
        o.y_label = "relative perturbation δ";
        o.log_y = true;
        out.emplace_back("c4_delta.svg", line_plot_svg(s, o));
      }
    } else if (id == "c5") {
      const std::vector<Series> s = series_by(c.at("rows"), "mode", c.at("baseline"),
                                              [](const json& row) -> const json& { return row; });
      PlotOptions o;
      o.title = "Activation pruning: PPL on " + primary;
      o.x_label = "percentile P of the block corrections zeroed";
      o.y_label = "PPL (95% interval)";
      o.log_y = true;
      o.hline = d(c.at("baseline").at("ppl"));
      o.hline_label = "no pruning";
      out.emplace_back("c5_actprune.svg", line_plot_svg(s, o));
    }
  }
  return out;
}

}  // namespace tl::study
