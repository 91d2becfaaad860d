#include "gantry/core/version.h"

namespace gantry {
const char* version() { return GANTRY_VERSION; }
}  // namespace gantry
