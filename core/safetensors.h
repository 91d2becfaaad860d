#pragma once
// safetensors: reading and writing the checkpoint format shared with PyTorch/Hugging Face.
//
// File layout (https://github.com/huggingface/safetensors):
//   [8 bytes]  N, the JSON header's length, unsigned 64-bit little-endian
//   [N bytes]  JSON: {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]}, ...,
//                     "__metadata__": {"<key>": "<string value>", ...}}   (metadata optional)
//   [rest]     the data: each tensor's bytes, row-major, little-endian, at [b, e) of this part.
//
// Contract:
// - gantry's Tensor is float32 only, so every loaded tensor is converted to float32; the dtype
//   the file stored it in is kept next to it (NamedTensor::dtype), so a checkpoint that is
//   loaded and saved again keeps PyTorch's dtypes (e.g. BatchNorm's num_batches_tracked as I64).
// - The reader trusts nothing: the header length must fit in the file (and be below 100 MB),
//   the JSON must be an object of well-formed entries with a known dtype, non-negative integer
//   shapes whose byte size equals the entry's byte range, and the ranges must tile the data part
//   exactly (start at 0, no gap, no overlap, nothing left over), as the reference implementation
//   requires. Any violation throws std::runtime_error naming the file and the problem; a
//   malformed or truncated file never crashes and never loads silently wrong.
// - Entries come back in the order of their data in the file (a file gantry wrote: the order
//   it was given, i.e. state_dict order).
// - Writing goes to a temporary file in the destination's directory, which is flushed to disk
//   (fsync) and then renamed over the destination: a crash leaves the old file or the new one,
//   never a torn one. Values that the target dtype cannot hold (a non-integer or out-of-range
//   value saved as I64/U8, ...) are an error naming the tensor, not a silent truncation.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "gantry/core/tensor.h"

namespace gantry {

// Element types a safetensors file may hold (the ones gantry reads and writes).
enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(DType t);  // "F32", "I64", ... (the safetensors spelling)
std::size_t dtype_size(DType t);  // bytes per element
// Parses a safetensors dtype name; false when it is not one of the above.
bool parse_dtype(const std::string& name, DType* out);

// One named tensor with the dtype it is (or will be) stored as on disk. The Tensor itself is
// always float32; `dtype` only says how to store it.
struct NamedTensor {
  std::string name;
  Tensor tensor;
  DType dtype = DType::F32;
};

// An ordered list of named tensors: what Module::state_dict() and Optimizer::state_dict()
// return and what checkpoints hold. Names are unique.
using StateDict = std::vector<NamedTensor>;
// The "__metadata__" of a file: free-form string pairs (gantry stores e.g. the model config).
using Metadata = std::map<std::string, std::string>;

struct SafetensorsContents {
  StateDict tensors;
  Metadata metadata;
};

// One element as `dtype`, little-endian (the byte order of safetensors and of torch.save).
// decode_element widens to float (F64 beyond float's range becomes +-inf; I64 rounds to the
// nearest float). encode_element throws std::invalid_argument "<who>: tensor '<tensor>' element
// <index> = <v> cannot be stored as <dtype> (<why>)" when the value does not fit (a non-integer
// or out-of-range value for an integer type, beyond F16's range, not 0/1 for BOOL).
float decode_element(const uint8_t* p, DType dtype);
void encode_element(float v, DType dtype, uint8_t* out, const char* who, const std::string& tensor,
                    int64_t index);

// Returns the entry called `name`, or null.
const NamedTensor* find_tensor(const StateDict& sd, const std::string& name);

// The entries under `prefix` ("netG" selects "netG.main.0.weight", ...) with "prefix." taken off
// their names, in order: one model's state_dict out of a checkpoint that holds several (torch
// training checkpoints nest them: {"netG": ..., "netD": ..., "epoch": 5}). Throws
// std::invalid_argument naming the prefix and the top-level names there are, when none match.
StateDict sub_state_dict(const StateDict& sd, const std::string& prefix);

// Serializes to the bytes of a safetensors file (the header padded with spaces to a multiple
// of 8 bytes, as the reference writer does). Throws std::invalid_argument for a duplicate or
// empty name, the reserved name "__metadata__", an undefined tensor, or a value the entry's
// dtype cannot represent.
std::vector<uint8_t> serialize_safetensors(const StateDict& tensors, const Metadata& metadata = {});

// Writes a safetensors file atomically (temporary file, fsync, rename). Throws
// std::runtime_error naming the path when the file cannot be written.
void save_safetensors(const std::string& path, const StateDict& tensors,
                      const Metadata& metadata = {});

// Parses the bytes of a safetensors file held in memory; `name` (a path or any label) is used
// in error messages. Validates everything first (see the contract above). Throws
// std::runtime_error "safetensors '<name>': <problem>".
SafetensorsContents parse_safetensors(const uint8_t* data, std::size_t size,
                                      const std::string& name);

// Reads and parses a file (tensors on the CPU). Throws std::runtime_error naming the path.
SafetensorsContents load_safetensors(const std::string& path);

}  // namespace gantry
