#pragma once
// report.html: one self-contained page (no scripts, no network) written into a run directory:
// loss curves of G and D, D(x) and D(G(z)) against the step, any further metric columns
// (e.g. ada_p, kid) as their own charts, the fixed-noise sample grids in order, real next to
// fake, the configuration and the throughput. Charts are inline SVG; images are the run's own
// PNG files, referenced by relative path.
#include <string>

namespace gantry::apps {

// Reads RUN/config.json, RUN/metrics.csv and RUN/samples/, and (re)writes RUN/report.html
// atomically. Missing pieces (no metrics yet) give an emptier page, not an error.
void write_report(const std::string& run_dir);

}  // namespace gantry::apps
