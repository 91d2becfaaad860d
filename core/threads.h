#pragma once
// CPU threads used by gantry's kernels (OpenMP underneath; OMP_NUM_THREADS is honoured).
namespace gantry {
void set_num_threads(int n);  // n >= 1
int num_threads();
}  // namespace gantry
