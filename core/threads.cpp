#include "gantry/core/threads.h"

#include <omp.h>

#include <stdexcept>
#include <string>

namespace gantry {

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("set_num_threads: " + std::to_string(n) + " must be >= 1");
  omp_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace gantry
