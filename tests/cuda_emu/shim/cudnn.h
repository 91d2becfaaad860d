#pragma once
// Stand-in for cudnn.h in the emulator build (GANTRY_CUDA_EMU): only the handle and status
// types the device layer names. The cuDNN paths themselves are not built there
// (tests/cuda_emu/library_unavailable.cpp), so creating a handle reports NOT_SUPPORTED.
#include "../gantry_cuda_emu.h"

struct gemu_cudnn;
using cudnnHandle_t = gemu_cudnn*;
enum cudnnStatus_t { CUDNN_STATUS_SUCCESS = 0, CUDNN_STATUS_NOT_SUPPORTED = 3000 };
inline const char* cudnnGetErrorString(cudnnStatus_t s) {
  return s == CUDNN_STATUS_SUCCESS ? "CUDNN_STATUS_SUCCESS" : "CUDNN_STATUS_NOT_SUPPORTED";
}
inline cudnnStatus_t cudnnCreate(cudnnHandle_t*) { return CUDNN_STATUS_NOT_SUPPORTED; }
inline cudnnStatus_t cudnnDestroy(cudnnHandle_t) { return CUDNN_STATUS_SUCCESS; }
inline cudnnStatus_t cudnnSetStream(cudnnHandle_t, cudaStream_t) { return CUDNN_STATUS_NOT_SUPPORTED; }
