#pragma once
// Stand-in for the CUDA runtime header in the emulator build (GANTRY_CUDA_EMU): see
// tests/cuda_emu/gantry_cuda_emu.h.
#include "../gantry_cuda_emu.h"
