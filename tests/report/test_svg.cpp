#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <regex>

#include "../common/test_util.hpp"
#include "report/svg.hpp"

using namespace tl;
using test::error_of;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace {
size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t i = s.find(needle); i != std::string::npos; i = s.find(needle, i + 1)) ++n;
  return n;
}
std::vector<std::string> texts_of_class(const std::string& svg, const std::string& cls) {
  std::vector<std::string> out;
  const std::regex re("<text class=\"" + cls + "\"[^>]*>([^<]*)</text>");
  for (std::sregex_iterator it(svg.begin(), svg.end(), re), end; it != end; ++it) out.push_back((*it)[1]);
  return out;
}
std::vector<Series> two_series() {
  return {{"seed", {0, 10, 30}, {12, 10, 50}}, {"random", {0, 10, 30}, {12, 40, 900}}};
}
}  // namespace

TEST(Svg, Structure) {
  PlotOptions o;
  o.title = "t";
  o.log_y = true;
  o.hline = 12;
  o.hline_label = "baseline";
  const std::string svg = line_plot_svg(two_series(), o);
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_EQ(count(svg, "<svg "), 1u);
  EXPECT_EQ(count(svg, "</svg>"), 1u);
  EXPECT_EQ(count(svg, "<polyline"), 2u);
  EXPECT_EQ(count(svg, "<circle"), 2u * 3 + 2);   // markers + legend swatches
  EXPECT_EQ(count(svg, "stroke-dasharray"), 2u);  // the line and its legend entry
  EXPECT_EQ(count(svg, "<g"), count(svg, "</g>"));
  EXPECT_EQ(count(svg, "<text"), count(svg, "</text>"));
  EXPECT_THAT(svg, HasSubstr(">baseline</text>"));
}

TEST(Svg, EscapesText) {
  EXPECT_EQ(xml_escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
  PlotOptions o;
  o.title = "PPL <ckpt & \"x\">";
  o.x_label = "x<";
  const std::string svg = line_plot_svg({{"a&b", {1, 2}, {3, 4}}}, o);
  EXPECT_THAT(svg, HasSubstr("PPL &lt;ckpt &amp; &quot;x&quot;&gt;"));
  EXPECT_THAT(svg, HasSubstr(">a&amp;b</text>"));
  EXPECT_EQ(svg.find("a&b"), std::string::npos);
  EXPECT_EQ(svg.find("<ckpt"), std::string::npos);
}

TEST(Svg, LinearTicksAre125) {
  EXPECT_THAT(nice_ticks(0, 50), ElementsAre(0, 10, 20, 30, 40, 50));
  EXPECT_THAT(nice_ticks(0.1, 0.95, 4), ElementsAre(0, 0.2, 0.4, 0.6, 0.8, 1.0));
  EXPECT_THAT(nice_ticks(3, 17, 3), ElementsAre(0, 5, 10, 15, 20));
  const auto t = nice_ticks(5, 5);  // degenerate range is widened
  EXPECT_GE(t.size(), 2u);
  EXPECT_LE(t.front(), 5);
  EXPECT_GE(t.back(), 5);
}

TEST(Svg, LogTicksAtDecades) {
  double lo = 3, hi = 4000;
  EXPECT_THAT(log_ticks(lo, hi), ElementsAre(1, 10, 100, 1000, 10000));
  EXPECT_EQ(lo, 1);
  EXPECT_EQ(hi, 10000);
  // In the plot: y ticks of the two series above (10 .. 900) are the decades 10, 100, 1000.
  PlotOptions o;
  o.log_y = true;
  const std::string svg = line_plot_svg(two_series(), o);
  EXPECT_THAT(texts_of_class(svg, "ytick"), ElementsAre("10", "100", "1000"));
  EXPECT_THAT(texts_of_class(svg, "xtick"), ElementsAre("0", "5", "10", "15", "20", "25", "30"));
  // Less than a decade: 1-2-5 multiples inside a padded range.
  lo = 480, hi = 530;
  const auto t = log_ticks(lo, hi);
  EXPECT_LT(lo, 480);
  EXPECT_GT(hi, 530);
  ASSERT_GE(t.size(), 2u);
  for (double v : t) EXPECT_TRUE(v >= lo && v <= hi) << v;
}

TEST(Svg, RejectsBadValues) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  PlotOptions o;
  EXPECT_THAT(error_of([&] { line_plot_svg({{"s", {1, 2}, {1, nan}}}, o); }), HasSubstr("non-finite"));
  EXPECT_THAT(error_of([&] { line_plot_svg({{"s", {INFINITY, 2}, {1, 2}}}, o); }), HasSubstr("non-finite"));
  EXPECT_THAT(error_of([&] { line_plot_svg({{"s", {1, 2}, {1}}}, o); }), HasSubstr("2 x values and 1"));
  EXPECT_THAT(error_of([&] { line_plot_svg({}, o); }), HasSubstr("no points"));
  EXPECT_NO_THROW(line_plot_svg({{"s", {1, 2}, {0, -1}}}, o));  // fine on a linear axis
  o.log_y = true;
  EXPECT_THAT(error_of([&] { line_plot_svg({{"s", {1, 2}, {1, 0}}}, o); }), HasSubstr("log axis"));
  EXPECT_THAT(error_of([&] { line_plot_svg({{"s", {1, 2}, {-3, 2}}}, o); }), HasSubstr("log axis"));
  o.hline = -1;
  EXPECT_THAT(error_of([&] { line_plot_svg({{"s", {1, 2}, {1, 2}}}, o); }), HasSubstr("horizontal line"));
  o.hline = nan;
  o.log_y = false;
  EXPECT_THAT(error_of([&] { line_plot_svg({{"s", {1, 2}, {1, 2}}}, o); }), HasSubstr("non-finite"));
}

TEST(Svg, IntervalWhiskers) {
  PlotOptions o;
  Series s{"arm", {0, 10}, {5, 6}, {4, 5.5}, {7, 6.5}};
  const std::string svg = line_plot_svg({s}, o);
  EXPECT_EQ(count(svg, "class=\"interval\""), 2u);
  // the axis widens to the interval ends: 7 is inside the y range
  std::vector<std::string> yt = texts_of_class(svg, "ytick");
  ASSERT_FALSE(yt.empty());
  EXPECT_GE(std::stod(yt.back()), 7.0);
  EXPECT_EQ(count(line_plot_svg(two_series(), o), "class=\"interval\""), 0u);
  s.y_hi = {7};
  EXPECT_THAT(error_of([&] { line_plot_svg({s}, o); }), HasSubstr("interval ends"));
  s.y_hi = {7, 5.9};  // 6 is not inside [5.5, 5.9]
  EXPECT_THAT(error_of([&] { line_plot_svg({s}, o); }), HasSubstr("does not contain"));
  s.y_hi = {7, 6.5};
  s.y_lo = {0, 5.5};
  o.log_y = true;
  EXPECT_THAT(error_of([&] { line_plot_svg({s}, o); }), HasSubstr("log axis"));
}
