// libFuzzer target for the restricted unpickler (core/pickle.h) on arbitrary bytes, and for
// what the CIFAR reader does with its result.
//
// The reader must return a value or throw std::runtime_error; a crash, sanitizer report, hang
// or other exception is a bug. A returned value is walked (cycles through the memo are
// possible, so each value is visited once): every numeric array's every element is read, and
// the size it claims must match the bytes it holds.
//
// Built only with clang (tests/extra.cmake); scripts/fuzz.sh pickle runs it with the numpy and
// CIFAR pickles of tests/data as seeds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <unordered_set>
#include <vector>

#include "gantry/core/pickle.h"

using gantry::pickle::Value;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gantry::pickle::Unpickler u(data, size, "fuzz-input");
  const Value* root = nullptr;
  try {
    root = u.run();
  } catch (const std::runtime_error&) {
    return 0;  // a clean rejection
  }
  std::vector<const Value*> pending = {root};
  std::unordered_set<const Value*> seen;
  double sum = 0;
  while (!pending.empty()) {
    const Value* v = pending.back();
    pending.pop_back();
    if (!v || !seen.insert(v).second) continue;
    (void)gantry::pickle::type_name(*v);
    if (v->kind == Value::Kind::Array) {
      const std::size_t es = gantry::pickle::numpy_item_size(v->items.at(0)->s);
      if (es == 0 || v->s.size() != static_cast<std::size_t>(v->numel()) * es) std::abort();
      for (int64_t k = 0; k < v->numel(); ++k) sum += v->element(k);
    }
    for (const Value* c : v->items) pending.push_back(c);
  }
  return sum == 12345.678 ? 1 : 0;  // keeps the reads from being optimized away
}
