#pragma once
// Whole-file reads and atomic whole-file writes, shared by the checkpoint formats.
//
// Contract:
// - read_file_bytes returns every byte of a regular file. Errors throw std::runtime_error
//   "<who> '<path>': <problem>" (missing, not a regular file, read error, shrank while read).
// - write_file_atomic writes to a temporary file next to `path` (same file system), fsyncs it,
//   renames it over `path` and fsyncs the folder (best effort): a crash leaves the old file or
//   the new one, never a torn one. Errors throw std::runtime_error "<who> '<path>': <problem>:
//   <strerror>" and leave no temporary behind.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gantry {

std::vector<uint8_t> read_file_bytes(const std::string& path, const std::string& who);

void write_file_atomic(const std::string& path, const uint8_t* data, std::size_t size,
                       const std::string& who);

}  // namespace gantry
