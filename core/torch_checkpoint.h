#pragma once
// torch.save files (.pth, .pt): reading and writing PyTorch's own checkpoint format, so a
// state_dict moves between gantry and PyTorch with torch.save / torch.load and no conversion.
//
// The format (PyTorch >= 1.6, "zipfile serialization"): a ZIP archive (entries stored, not
// compressed) whose entries share one top folder, e.g. "archive/":
//   archive/data.pkl      the object, pickled (protocol 2); each tensor is the call
//                         torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
//                         requires_grad, hooks), and each storage a persistent id
//                         ("storage", torch.FloatStorage, "<key>", "cpu", numel)
//   archive/data/<key>    that storage's elements, raw, little-endian
//   archive/version       "3"; newer PyTorch adds archive/byteorder ("little") and .data/*
//
// Contract:
// - Reading: the archive is opened with libzip; data.pkl is run by a small unpickler that knows
//   only the opcodes and the few globals a state_dict needs (collections.OrderedDict, the
//   tensor/parameter rebuild functions, the torch.*Storage types): no Python code, no other
//   class. Anything else — torch.save(model) of a whole nn.Module, a TorchScript archive, the
//   pre-1.6 format — is an error that names the file and says what to save instead.
// - Tensors come back float32 on the CPU, whatever their storage type, with the stored dtype in
//   NamedTensor::dtype (so num_batches_tracked stays I64 when saved again). Views are honoured:
//   storage offset and strides, checked against the storage's size.
// - Nested dicts (a training checkpoint {"netG": netG.state_dict(), "epoch": 5, ...}) are
//   flattened with '.' ("netG.main.0.weight"); list and tuple items by their index. Leaves that
//   are not tensors (numbers, strings, booleans, None) go to the metadata, as text ("epoch" ->
//   "5"). Entries keep the pickle's order (state_dict order).
// - Writing: an OrderedDict of the tensors, in order, each in its own storage, contiguous,
//   stored as NamedTensor::dtype (values that do not fit are an error naming the tensor, as for
//   safetensors). The pickle uses only globals that torch.load(weights_only=True) allows. The
//   file is written atomically (temporary file, fsync, rename).
// - Everything read is checked before it is trusted: a malformed archive or pickle, a missing
//   or short storage record, a view beyond its storage, a big-endian file throw
//   std::runtime_error "torch checkpoint '<file>': <problem>"; nothing crashes or loads wrong.
// - Without libzip at build time (GANTRY_HAVE_LIBZIP undefined: the GPU machines' staged
//   builds), every call throws std::runtime_error saying so; torch_checkpoint_supported() tells.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "gantry/core/safetensors.h"

namespace gantry {

// Whether this build reads and writes torch.save files (it was built with libzip).
bool torch_checkpoint_supported();

// Parses a torch.save archive held in memory; `name` labels it in error messages.
SafetensorsContents parse_torch_checkpoint(const uint8_t* data, std::size_t size,
                                           const std::string& name);
// Reads a .pth/.pt file written by torch.save (or by save_torch_checkpoint).
SafetensorsContents load_torch_checkpoint(const std::string& path);

// The bytes of a torch.save archive holding `tensors` as an OrderedDict (state_dict order).
// Throws std::invalid_argument for an empty or duplicate name, an undefined tensor, or a value
// its dtype cannot hold.
std::vector<uint8_t> serialize_torch_checkpoint(const StateDict& tensors);
// Writes it atomically; torch.load(path) gives the state_dict back.
void save_torch_checkpoint(const std::string& path, const StateDict& tensors);

// Whether save_tensor_file writes `path` as a torch.save archive: it ends in .pth, .pt or .bin.
bool is_torch_checkpoint_path(const std::string& path);

// Reads either checkpoint format, told apart by the file's first bytes: a torch.save archive
// (.pth/.pt) or safetensors. What every app loads weights with.
SafetensorsContents load_tensor_file(const std::string& path);

// Writes safetensors, or a torch.save archive when the path ends in .pth, .pt or .bin.
void save_tensor_file(const std::string& path, const StateDict& tensors,
                      const Metadata& metadata = {});

}  // namespace gantry
