#include "report/svg.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

namespace tl {

std::string xml_escape(const std::string& s) {
  std::string r;
  r.reserve(s.size());
  for (const char c : s) {
    switch (c) {
      case '&':
        r += "&amp;";
        break;
      case '<':
        r += "&lt;";
        break;
      case '>':
        r += "&gt;";
        break;
      case '"':
        r += "&quot;";
        break;
      case '\'':
        r += "&apos;";
        break;
      default:
        r += c;
    }
  }
  return r;
}

namespace {

// Snaps values like 0.30000000000000004 or -1e-17 so labels and comparisons come out clean.
double clean(double v, double step) {
  if (std::fabs(v) < std::fabs(step) * 1e-9) return 0;
  return std::stod(fmt::format("{:.12g}", v));
}

void widen_degenerate(double& lo, double& hi) {
  if (hi > lo) return;
  const double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
  lo -= pad;
  hi += pad;
}

std::string label(double v) {
  return fmt::format("{:g}", v);
}

// Tableau 10: distinct, colour-blind friendlier than pure hues; beyond ten, golden-angle hues.
std::string colour(size_t i) {
  static const char* kPalette[] = {"#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1",
                                   "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac"};
  if (i < std::size(kPalette)) return kPalette[i];
  return fmt::format("hsl({:.0f},60%,45%)", std::fmod(double(i) * 137.508, 360.0));
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int target) {
  TL_CHECK(std::isfinite(lo) && std::isfinite(hi), "plot: non-finite axis range [{}, {}]", lo, hi);
  widen_degenerate(lo, hi);
  const double raw = (hi - lo) / std::max(target, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  const double step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  const double first = std::floor(lo / step + 1e-9) * step;
  const double last = std::ceil(hi / step - 1e-9) * step;
  std::vector<double> t;
  for (int i = 0; first + i * step <= last + step * 1e-9; ++i) t.push_back(clean(first + i * step, step));
  return t;
}

std::vector<double> log_ticks(double& lo, double& hi) {
  TL_CHECK(lo > 0 && hi > 0 && std::isfinite(lo) && std::isfinite(hi),
           "plot: a log axis needs positive finite values, found [{}, {}]", lo, hi);
  double l = std::log10(lo), h = std::log10(hi);
  std::vector<double> t;
  if (h - l >= 1) {  // whole decades; every k-th when there are many
    const int d0 = int(std::floor(l + 1e-9)), d1 = int(std::ceil(h - 1e-9));
    const int k = std::max(1, (d1 - d0 + 7) / 8);
    const int top = d0 + (d1 - d0 + k - 1) / k * k;
    for (int d = d0; d <= top; d += k) t.push_back(std::pow(10.0, d));
    lo = t.front();
    hi = t.back();
    return t;
  }
  // Less than a decade: pad the data range (in log space) and label the 1-2-5 (or 1..9) multiples inside.
  const double pad = std::max((h - l) * 0.08, 0.02);
  l -= pad;
  h += pad;
  lo = std::pow(10.0, l);
  hi = std::pow(10.0, h);
  for (const auto& mult : {std::vector<double>{1, 2, 5}, std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9}}) {
    t.clear();
    for (int e = int(std::floor(l)) - 1; e <= int(std::ceil(h)); ++e)
      for (const double m : mult) {
        const double v = clean(m * std::pow(10.0, e), std::pow(10.0, e));
        if (v >= lo && v <= hi) t.push_back(v);
      }
    if (t.size() >= 3) return t;
  }
  t.clear();
  for (const double v : nice_ticks(lo, hi, 4))
    if (v >= lo && v <= hi) t.push_back(v);
  return t;
}

std::string line_plot_svg(const std::vector<Series>& series, const PlotOptions& opt) {
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  size_t points = 0;
  auto check_y = [&](double y, const std::string& what) {
    TL_CHECK(std::isfinite(y), "plot: {} has a non-finite y value {}", what, y);
    TL_CHECK(!opt.log_y || y > 0, "plot: {} has y = {}, which a log axis cannot show", what, y);
  };
  for (const auto& s : series) {
    TL_CHECK(s.x.size() == s.y.size(), "plot: series '{}' has {} x values and {} y values", s.name,
             s.x.size(), s.y.size());
    const bool bars = !s.y_lo.empty() || !s.y_hi.empty();
    TL_CHECK(!bars || (s.y_lo.size() == s.y.size() && s.y_hi.size() == s.y.size()),
             "plot: series '{}' has {} y values but {} lower and {} upper interval ends", s.name, s.y.size(),
             s.y_lo.size(), s.y_hi.size());
    for (size_t i = 0; i < s.x.size(); ++i) {
      TL_CHECK(std::isfinite(s.x[i]), "plot: series '{}' has a non-finite x value {}", s.name, s.x[i]);
      check_y(s.y[i], "series '" + s.name + "'");
      xmin = std::min(xmin, s.x[i]);
      xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, s.y[i]);
      ymax = std::max(ymax, s.y[i]);
      if (bars) {
        check_y(s.y_lo[i], "series '" + s.name + "' (interval)");
        check_y(s.y_hi[i], "series '" + s.name + "' (interval)");
        TL_CHECK(s.y_lo[i] <= s.y[i] && s.y[i] <= s.y_hi[i],
                 "plot: series '{}' point {}: the interval [{}, {}] does not contain y = {}", s.name, i,
                 s.y_lo[i], s.y_hi[i], s.y[i]);
        ymin = std::min(ymin, s.y_lo[i]);
        ymax = std::max(ymax, s.y_hi[i]);
      }
      ++points;
    }
  }
  TL_CHECK(points > 0, "plot: no points to draw");
  if (opt.hline) {
    check_y(*opt.hline, "the horizontal line");
    ymin = std::min(ymin, *opt.hline);
    ymax = std::max(ymax, *opt.hline);
  }

  const std::vector<double> xt = nice_ticks(xmin, xmax);
  const double x0 = xt.front(), x1 = xt.back();
  double y0 = ymin, y1 = ymax;
  std::vector<double> yt;
  if (opt.log_y) {
    yt = log_ticks(y0, y1);
  } else {
    yt = nice_ticks(ymin, ymax);
    y0 = yt.front();
    y1 = yt.back();
  }

  const double W = opt.width, H = opt.height;
  const double L = 78, R = 170, T = 46, B = 60;  // margins: y labels left, legend right
  const double px0 = L, px1 = W - R, py0 = T, py1 = H - B;
  auto X = [&](double x) { return px0 + (x - x0) / (x1 - x0) * (px1 - px0); };
  auto Y = [&](double y) {
    const double f = opt.log_y ? (std::log10(y) - std::log10(y0)) / (std::log10(y1) - std::log10(y0))
                               : (y - y0) / (y1 - y0);
    return py1 - f * (py1 - py0);
  };

  std::string o;
  o += fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n"
      "<rect x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n",
      W, H);
  o += fmt::format("<text x=\"{:.1f}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
                   (px0 + px1) / 2, xml_escape(opt.title));
  // Grid, ticks and tick labels.
  o += "<g stroke=\"#e3e3e3\" stroke-width=\"1\">\n";
  for (const double v : xt)
    o += fmt::format("<line x1=\"{0:.2f}\" y1=\"{1}\" x2=\"{0:.2f}\" y2=\"{2}\"/>\n", X(v), py0, py1);
  for (const double v : yt)
    o += fmt::format("<line x1=\"{1}\" y1=\"{0:.2f}\" x2=\"{2}\" y2=\"{0:.2f}\"/>\n", Y(v), px0, px1);
  o += "</g>\n<g stroke=\"#333\" stroke-width=\"1\">\n";
  for (const double v : xt)
    o += fmt::format("<line x1=\"{0:.2f}\" y1=\"{1}\" x2=\"{0:.2f}\" y2=\"{2}\"/>\n", X(v), py1, py1 + 5);
  for (const double v : yt)
    o += fmt::format("<line x1=\"{1}\" y1=\"{0:.2f}\" x2=\"{2}\" y2=\"{0:.2f}\"/>\n", Y(v), px0 - 5, px0);
  o += "</g>\n<g fill=\"#333\">\n";
  for (const double v : xt)
    o += fmt::format("<text class=\"xtick\" x=\"{:.2f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n",
                     X(v), py1 + 19, xml_escape(label(v)));
  for (const double v : yt)
    o += fmt::format("<text class=\"ytick\" x=\"{:.1f}\" y=\"{:.2f}\" text-anchor=\"end\">{}</text>\n",
                     px0 - 8, Y(v) + 4, xml_escape(label(v)));
  o += "</g>\n";
  o += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n",
                   px0, py0, px1 - px0, py1 - py0);
  o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", (px0 + px1) / 2,
                   H - 16, xml_escape(opt.x_label));
  o += fmt::format(
      "<text x=\"20\" y=\"{0:.1f}\" text-anchor=\"middle\" transform=\"rotate(-90 20 {0:.1f})\">{1}</text>\n",
      (py0 + py1) / 2, xml_escape(opt.y_label + (opt.log_y ? " (log scale)" : "")));

  if (opt.hline)
    o += fmt::format(
        "<line x1=\"{}\" y1=\"{:.2f}\" x2=\"{}\" y2=\"{:.2f}\" stroke=\"#555\" stroke-width=\"1.5\" "
        "stroke-dasharray=\"6 4\"/>\n",
        px0, Y(*opt.hline), px1, Y(*opt.hline));
  for (size_t i = 0; i < series.size(); ++i) {
    const auto& s = series[i];
    const std::string c = colour(i);
    std::string pts;
    for (size_t k = 0; k < s.x.size(); ++k)
      pts += fmt::format("{}{:.2f},{:.2f}", k ? " " : "", X(s.x[k]), Y(s.y[k]));
    o += fmt::format("<g class=\"series\"><title>{}</title>\n", xml_escape(s.name));
    o += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n", c, pts);
    for (size_t k = 0; k < s.x.size(); ++k)
      o += fmt::format("<circle cx=\"{:.2f}\" cy=\"{:.2f}\" r=\"3.5\" fill=\"{}\"/>\n", X(s.x[k]), Y(s.y[k]),
                       c);
    for (size_t k = 0; k < s.y_lo.size(); ++k)  // interval whiskers with 4-pixel caps
      o += fmt::format(
          "<path class=\"interval\" "
          "d=\"M{0:.2f},{1:.2f}V{2:.2f}M{3:.2f},{1:.2f}H{4:.2f}M{3:.2f},{2:.2f}H{4:.2f}\" "
          "stroke=\"{5}\" stroke-width=\"1.2\" fill=\"none\"/>\n",
          X(s.x[k]), Y(s.y_lo[k]), Y(s.y_hi[k]), X(s.x[k]) - 4, X(s.x[k]) + 4, c);
    o += "</g>\n";
  }

  // Legend, right of the plot area.
  double ly = py0 + 8;
  const double lx = px1 + 16;
  for (size_t i = 0; i < series.size(); ++i, ly += 20) {
    const std::string c = colour(i);
    o += fmt::format(
        "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"{3}\" stroke-width=\"2\"/>"
        "<circle cx=\"{4}\" cy=\"{1}\" r=\"3.5\" fill=\"{3}\"/>"
        "<text x=\"{5}\" y=\"{6}\">{7}</text>\n",
        lx, ly, lx + 24, c, lx + 12, lx + 30, ly + 4, xml_escape(series[i].name));
  }
  if (opt.hline && !opt.hline_label.empty())
    o += fmt::format(
        "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#555\" stroke-width=\"1.5\" "
        "stroke-dasharray=\"6 4\"/><text x=\"{3}\" y=\"{4}\">{5}</text>\n",
        lx, ly, lx + 24, lx + 30, ly + 4, xml_escape(opt.hline_label));
  o += "</svg>\n";
  return o;
}

}  // namespace tl
