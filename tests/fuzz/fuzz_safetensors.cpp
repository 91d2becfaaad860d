// libFuzzer target for the safetensors reader (parse_safetensors on arbitrary bytes).
//
// The reader must either return a fully consistent result or throw std::runtime_error; any
// crash, sanitizer report, hang or other exception type is a bug. When a parse succeeds, the
// result is written back and re-read, which must succeed (unless the writer refuses a value
// the narrow dtype cannot hold again, e.g. an I64 beyond float's exact range) and give the
// same names and shapes.
//
// Built only with clang (tests/extra.cmake); scripts/fuzz.sh configures such a
// build and runs it with the seed corpus in tests/fuzz/corpus/.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>

#include "gantry/core/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gantry::SafetensorsContents c;
  try {
    c = gantry::parse_safetensors(data, size, "fuzz-input");
  } catch (const std::runtime_error&) {
    return 0;  // a clean rejection
  }
  std::vector<uint8_t> again;
  try {
    again = gantry::serialize_safetensors(c.tensors, c.metadata);
  } catch (const std::invalid_argument&) {
    return 0;  // a value that does not survive float32 (documented writer refusal)
  }
  const gantry::SafetensorsContents d = gantry::parse_safetensors(again.data(), again.size(), "fuzz-rewrite");
  if (d.tensors.size() != c.tensors.size() || d.metadata != c.metadata) std::abort();
  for (std::size_t i = 0; i < c.tensors.size(); ++i) {
    if (d.tensors[i].name != c.tensors[i].name || d.tensors[i].dtype != c.tensors[i].dtype ||
        d.tensors[i].tensor.shape() != c.tensors[i].tensor.shape())
      std::abort();
  }
  return 0;
}
