#include "report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "run_dir.h"

namespace fs = std::filesystem;

namespace gantry::apps {

namespace {

struct Table {
  std::vector<std::string> columns;
  std::vector<std::vector<double>> rows;
  int index(const std::string& c) const {
    auto it = std::find(columns.begin(), columns.end(), c);
    return it == columns.end() ? -1 : static_cast<int>(it - columns.begin());
  }
};

Table read_csv(const std::string& path) {
  Table t;
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return t;
  std::stringstream hs(line);
  for (std::string c; std::getline(hs, c, ',');) t.columns.push_back(c);
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<double> row;
    std::stringstream ls(line);
    for (std::string c; std::getline(ls, c, ',');) row.push_back(c.empty() ? NAN : std::atof(c.c_str()));
    if (row.size() == t.columns.size()) t.rows.push_back(std::move(row));
  }
  return t;
}

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '&': o += "&amp;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string fmt(double v, int prec = 3) {
  std::ostringstream os;
  os.precision(prec);
  os << v;
  return os.str();
}

// A line chart of several series against the step column, as inline SVG. Long runs are thinned
// to at most ~1500 points per series (every k-th row) so the page stays small.
std::string svg_chart(const Table& t, const std::string& title, const std::vector<std::string>& series) {
  static const char* colors[] = {"#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};
  const int xi = t.index("step");
  std::vector<int> cols;
  for (const auto& s : series)
    if (t.index(s) >= 0) cols.push_back(t.index(s));
  if (xi < 0 || cols.empty() || t.rows.empty()) return "";
  const double W = 720, H = 260, L = 56, R = 12, T = 28, B = 34;
  double xmin = t.rows.front()[xi], xmax = t.rows.back()[xi], ymin = INFINITY, ymax = -INFINITY;
  for (const auto& r : t.rows)
    for (int c : cols)
      if (std::isfinite(r[c])) {
        ymin = std::min(ymin, r[c]);
        ymax = std::max(ymax, r[c]);
      }
  if (!std::isfinite(ymin)) return "";
  if (ymax - ymin < 1e-9) { ymin -= 0.5; ymax += 0.5; }
  if (xmax <= xmin) xmax = xmin + 1;
  auto X = [&](double x) { return L + (x - xmin) / (xmax - xmin) * (W - L - R); };
  auto Y = [&](double y) { return T + (1 - (y - ymin) / (ymax - ymin)) * (H - T - B); };
  std::ostringstream os;
  os << "<svg class=\"chart\" role=\"img\" aria-label=\"" << esc(title) << "\" viewBox=\"0 0 " << W << ' ' << H
     << "\" width=\"" << W << "\" height=\"" << H << "\" xmlns=\"http://www.w3.org/2000/svg\">\n";
  os << "<text x=\"" << L << "\" y=\"18\" font-size=\"14\" font-weight=\"bold\">" << esc(title) << "</text>\n";
  // Axes with 5 ticks each.
  os << "<g stroke=\"#ccc\" font-size=\"11\" fill=\"#444\">\n";
  for (int i = 0; i <= 4; ++i) {
    const double yv = ymin + (ymax - ymin) * i / 4, xv = xmin + (xmax - xmin) * i / 4;
    os << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << Y(yv) << "\" y2=\"" << Y(yv) << "\"/>"
       << "<text stroke=\"none\" x=\"" << L - 6 << "\" y=\"" << Y(yv) + 4 << "\" text-anchor=\"end\">" << fmt(yv) << "</text>\n";
    os << "<text stroke=\"none\" x=\"" << X(xv) << "\" y=\"" << H - B + 16 << "\" text-anchor=\"middle\">"
       << static_cast<long long>(std::llround(xv)) << "</text>\n";
  }
  os << "<text stroke=\"none\" x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 4 << "\" text-anchor=\"middle\">step</text>\n</g>\n";
  const size_t stride = std::max<size_t>(1, t.rows.size() / 1500);
  for (size_t k = 0; k < cols.size(); ++k) {
    os << "<polyline fill=\"none\" stroke-width=\"1.3\" stroke=\"" << colors[k % 6] << "\" points=\"";
    for (size_t i = 0; i < t.rows.size(); i += stride) {
      const double v = t.rows[i][cols[k]];
      if (std::isfinite(v)) os << X(t.rows[i][xi]) << ',' << Y(v) << ' ';
    }
    os << "\"/>\n";
    os << "<rect x=\"" << W - R - 150 << "\" y=\"" << T + 4 + 16 * k << "\" width=\"10\" height=\"10\" fill=\"" << colors[k % 6]
       << "\"/><text x=\"" << W - R - 134 << "\" y=\"" << T + 13 + 16 * k << "\" font-size=\"12\">"
       << esc(t.columns[cols[k]]) << "</text>\n";
  }
  os << "</svg>\n";
  return os.str();
}

double median(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x); }), v.end());
  if (v.empty()) return NAN;
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

}  // namespace

void write_report(const std::string& run_dir) {
  const fs::path root(run_dir);
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(read_text((root / "config.json").string()));
  } catch (...) {
    config = nlohmann::json::object();
  }
  const Table t = read_csv((root / "metrics.csv").string());

  std::vector<std::string> samples;
  if (fs::is_directory(root / "samples"))
    for (const auto& e : fs::directory_iterator(root / "samples")) {
      const std::string f = e.path().filename().string();
      if (f.rfind("step_", 0) == 0 && e.path().extension() == ".png") samples.push_back(f);
    }
  std::sort(samples.begin(), samples.end());

  std::ostringstream h;
  const std::string title = "gantry DCGAN run: " + root.filename().string();
  h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" << esc(title) << "</title>\n"
    << "<style>body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}"
       "h2{border-bottom:1px solid #ddd;padding-bottom:4px}"
       "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;font-size:13px}"
       ".grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0}"
       ".grid img{width:260px;image-rendering:pixelated;border:1px solid #ccc}"
       ".pair img{width:420px;image-rendering:pixelated}figcaption{font-size:12px;color:#555}</style>\n"
    << "</head><body>\n<h1>" << esc(title) << "</h1>\n";

  // Summary and throughput.
  h << "<h2 id=\"summary\">Summary</h2>\n<table>";
  if (!t.rows.empty()) {
    const auto& last = t.rows.back();
    auto col = [&](const char* c) { const int i = t.index(c); return i >= 0 ? last[i] : NAN; };
    std::vector<double> ips;
    const int ic = t.index("images_per_sec");
    for (const auto& r : t.rows)
      if (ic >= 0) ips.push_back(r[ic]);
    h << "<tr><th>steps</th><td>" << static_cast<long long>(col("step")) << "</td></tr>"
      // 1-based, as the console's "[epoch N]" (metrics.csv keeps the loader's 0-based index).
      << "<tr><th>epoch</th><td id=\"epoch\">" << static_cast<long long>(col("epoch")) + 1 << "</td></tr>"
      << "<tr><th>last loss D / G</th><td>" << fmt(col("loss_d")) << " / " << fmt(col("loss_g")) << "</td></tr>"
      << "<tr><th>last D(x) / D(G(z))</th><td>" << fmt(col("d_x")) << " / " << fmt(col("d_g_z2")) << "</td></tr>"
      << "<tr><th>throughput (median)</th><td id=\"throughput\">" << fmt(median(ips), 4) << " images/s</td></tr>"
      << "<tr><th>training time</th><td>" << fmt(col("seconds"), 5) << " s</td></tr>";
  } else {
    h << "<tr><td>no steps logged yet</td></tr>";
  }
  h << "</table>\n";

  h << "<h2 id=\"losses\">Losses</h2>\n" << svg_chart(t, "Generator and discriminator loss", {"loss_g", "loss_d"});
  h << "<h2 id=\"scores\">Discriminator scores</h2>\n"
    << svg_chart(t, "D(x) and D(G(z))", {"d_x", "d_g_z1", "d_g_z2"});
  // Any further columns (e.g. ada_p, kid, fid) get their own chart.
  static const std::vector<std::string> standard = {"step", "epoch", "loss_d", "loss_g", "d_x", "d_g_z1",
                                                    "d_g_z2", "seconds", "images_per_sec"};
  for (const auto& c : t.columns)
    if (std::find(standard.begin(), standard.end(), c) == standard.end())
      h << "<h2 id=\"metric-" << esc(c) << "\">" << esc(c) << "</h2>\n" << svg_chart(t, c, {c});
  h << "<h2 id=\"throughput-chart\">Throughput</h2>\n" << svg_chart(t, "images per second", {"images_per_sec"});

  h << "<h2 id=\"real-vs-fake\">Real vs fake</h2>\n<div class=\"grid pair\">";
  if (fs::exists(root / "samples" / "real.png"))
    h << "<figure><img src=\"samples/real.png\" alt=\"real images\"><figcaption>real</figcaption></figure>";
  if (!samples.empty())
    h << "<figure><img src=\"samples/" << esc(samples.back()) << "\" alt=\"fake images\"><figcaption>fake ("
      << esc(samples.back()) << ")</figcaption></figure>";
  h << "</div>\n";

  h << "<h2 id=\"progress\">Samples over training (fixed noise)</h2>\n<div class=\"grid\">";
  for (const auto& s : samples)
    h << "<figure><img src=\"samples/" << esc(s) << "\" alt=\"" << esc(s) << "\"><figcaption>" << esc(s)
      << "</figcaption></figure>";
  h << "</div>\n";

  h << "<h2 id=\"config\">Configuration</h2>\n<table>";
  // One row per setting: nested objects (the "settings" block) are spread out as key.subkey.
  auto row = [&](const std::string& k, const nlohmann::json& v) {
    h << "<tr><th>" << esc(k) << "</th><td>" << esc(v.is_string() ? v.get<std::string>() : v.dump()) << "</td></tr>";
  };
  for (auto it = config.begin(); it != config.end(); ++it) {
    if (it.value().is_object())
      for (auto jt = it.value().begin(); jt != it.value().end(); ++jt) row(it.key() + "." + jt.key(), jt.value());
    else
      row(it.key(), it.value());
  }
  h << "</table>\n</body></html>\n";
  write_text_atomic((root / "report.html").string(), h.str());
}

}  // namespace gantry::apps
