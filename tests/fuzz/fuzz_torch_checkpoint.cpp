// libFuzzer target for the torch.save reader (parse_torch_checkpoint on arbitrary bytes).
//
// The first input byte picks what the rest is. Even: data.pkl, put into an archive next to two
// storages (data/0: 16 floats, data/1: 8 bytes), so that most inputs reach the unpickler rather
// than stopping at a ZIP checksum. Odd: the whole file (the ZIP container, through libzip).
// The reader must return a consistent result or throw std::runtime_error; a crash, sanitizer
// report, hang or other exception is a bug. A successful parse is written back and re-read,
// which must succeed (unless the writer refuses a value its dtype cannot hold as float32, e.g.
// an I64 beyond 2^24's exact range) and give the same names and shapes.
//
// Built only with clang (tests/extra.cmake); scripts/fuzz.sh torch runs it with the
// seed corpus in tests/fuzz/torch_corpus/.
#include <zip.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "gantry/core/torch_checkpoint.h"

namespace {

std::vector<uint8_t> archive_with_pickle(const uint8_t* pkl, size_t n) {
  static const std::vector<uint8_t> floats(64, 0x3f), eight(8, 1);
  zip_error_t ze;
  zip_error_init(&ze);
  zip_source_t* mem = zip_source_buffer_create(nullptr, 0, 0, &ze);
  zip_t* za = mem ? zip_open_from_source(mem, ZIP_TRUNCATE, &ze) : nullptr;
  if (!za) std::abort();
  zip_source_keep(mem);
  const std::pair<const char*, std::pair<const void*, size_t>> entries[] = {
      {"archive/data.pkl", {pkl, n}}, {"archive/data/0", {floats.data(), floats.size()}},
      {"archive/data/1", {eight.data(), eight.size()}}};
  for (const auto& [name, bytes] : entries)
    if (zip_file_add(za, name, zip_source_buffer(za, bytes.first, bytes.second, 0), 0) < 0) std::abort();
  if (zip_close(za) != 0 || zip_source_open(mem) != 0) std::abort();
  zip_source_seek(mem, 0, SEEK_END);
  std::vector<uint8_t> out(static_cast<size_t>(zip_source_tell(mem)));
  zip_source_seek(mem, 0, SEEK_SET);
  if (zip_source_read(mem, out.data(), out.size()) != static_cast<zip_int64_t>(out.size())) std::abort();
  zip_source_close(mem);
  zip_source_free(mem);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::vector<uint8_t> file =
      data[0] % 2 == 0 ? archive_with_pickle(data + 1, size - 1) : std::vector<uint8_t>(data + 1, data + size);
  gantry::SafetensorsContents c;
  try {
    c = gantry::parse_torch_checkpoint(file.data(), file.size(), "fuzz-input");
  } catch (const std::runtime_error&) {
    return 0;  // a clean rejection
  }
  std::vector<uint8_t> again;
  try {
    again = gantry::serialize_torch_checkpoint(c.tensors);
  } catch (const std::invalid_argument&) {
    return 0;  // a value that does not survive float32 (documented writer refusal)
  }
  const gantry::SafetensorsContents d = gantry::parse_torch_checkpoint(again.data(), again.size(), "fuzz-again");
  if (d.tensors.size() != c.tensors.size()) std::abort();
  for (size_t i = 0; i < c.tensors.size(); ++i)
    if (d.tensors[i].name != c.tensors[i].name || d.tensors[i].tensor.shape() != c.tensors[i].tensor.shape() ||
        d.tensors[i].dtype != c.tensors[i].dtype)
      std::abort();
  return 0;
}
