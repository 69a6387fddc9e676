// A small line-plot writer for reports (ternlab sweep and later studies): series of (x, y) points as
// polylines with markers, optional dashed horizontal reference line, 1-2-5 ticks (decades on a log axis),
// a legend and a title. Self-contained SVG 1.1 text, no scripts or external resources.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace tl {

struct Series {
  std::string name;
  std::vector<double> x, y;  // same length; drawn in the given order
  // Optional interval per point (both empty, or both as long as y, with lo <= y <= hi): a vertical whisker.
  std::vector<double> y_lo = {}, y_hi = {};
};

struct PlotOptions {
  std::string title, x_label, y_label;
  bool log_y = false;
  std::optional<double> hline;  // dashed horizontal line at this y (e.g. a baseline)
  std::string hline_label;      // its legend entry (none if empty)
  int width = 760, height = 460;
};

// Throws tl::Error for no points at all, x/y of different lengths, intervals of the wrong length or not
// around their y, a non-finite value, or (log_y) a non-positive y, interval end or hline.
std::string line_plot_svg(const std::vector<Series>& series, const PlotOptions& opt);

// Helpers, exposed for tests.
std::string xml_escape(const std::string& s);
// Tick values covering [lo, hi] with a 1-2-5 step (about `target` of them); the first <= lo, the last >= hi.
std::vector<double> nice_ticks(double lo, double hi, int target = 6);
// Ticks for a log axis over [lo, hi] (lo > 0): whole decades when the data span at least one, else
// 1-2-5 multiples of powers of ten inside the range. Returns the axis range in `lo`/`hi` (widened).
std::vector<double> log_ticks(double& lo, double& hi);

}  // namespace tl
