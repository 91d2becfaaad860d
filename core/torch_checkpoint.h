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
// - Writing a whole object (save_torch_object): a TorchValue tree — dicts (string or int keys),
//   lists, tuples, None, bools, ints, floats, strings, tensors — as torch.save writes the same
//   Python object, e.g. a training checkpoint {"netG": OrderedDict, "optimizerG": {"state":
//   {0: {...}}, "param_groups": [...]}, "epoch": 3}. Reading it back flattens it as above.
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

// A Python value for torch.save, built in C++: what a training checkpoint holds around its
// state_dicts. Only the types torch.load(weights_only=True) accepts. Dicts keep insertion order;
// their keys are strings or ints (an optimizer's state is keyed by parameter index).
class TorchValue {
 public:
  enum class Kind { None, Bool, Int, Float, Str, Tensor, List, Tuple, Dict };
  TorchValue() = default;  // None
  static TorchValue boolean(bool b);
  static TorchValue integer(int64_t i);
  static TorchValue real(double f);
  static TorchValue string(std::string s);
  // Written contiguous, as `dtype` (I64 for a step count, F32 for weights).
  static TorchValue tensor(const Tensor& t, DType dtype = DType::F32);
  static TorchValue list(std::vector<TorchValue> items = {});
  static TorchValue tuple(std::vector<TorchValue> items);
  static TorchValue dict();          // a plain dict: what optimizer.state_dict() returns
  static TorchValue ordered_dict();  // collections.OrderedDict: what module.state_dict() returns
  // A module's state_dict: an OrderedDict name -> tensor, in order. Throws
  // std::invalid_argument for an empty or duplicate name or an undefined tensor.
  static TorchValue state_dict(const StateDict& tensors);

  // Dicts: adds key -> value at the end; a key already present is std::invalid_argument.
  TorchValue& set(const std::string& key, TorchValue value);
  TorchValue& set(int64_t key, TorchValue value);
  // Lists: appends.
  TorchValue& push(TorchValue value);

  Kind kind() const { return kind_; }
  bool ordered() const { return ordered_; }
  bool flag() const { return i_ != 0; }
  int64_t int_value() const { return i_; }
  double float_value() const { return f_; }
  const std::string& str() const { return s_; }
  const Tensor& tensor_value() const { return t_; }
  DType dtype() const { return dtype_; }
  // List and tuple items; for a dict: key, value, key, value, ...
  const std::vector<TorchValue>& items() const { return items_; }

 private:
  TorchValue& set_item(TorchValue key, TorchValue value);
  Kind kind_ = Kind::None;
  bool ordered_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::string s_;
  Tensor t_;
  DType dtype_ = DType::F32;
  std::vector<TorchValue> items_;
};

// The bytes of a torch.save archive holding `root`; torch.load gives the same Python object.
std::vector<uint8_t> serialize_torch_object(const TorchValue& root);
// Writes it atomically.
void save_torch_object(const std::string& path, const TorchValue& root);

// Whether save_tensor_file writes `path` as a torch.save archive: it ends in .pth, .pt or .bin.
bool is_torch_checkpoint_path(const std::string& path);

// Reads either checkpoint format, told apart by the file's first bytes: a torch.save archive
// (.pth/.pt) or safetensors. What every app loads weights with.
SafetensorsContents load_tensor_file(const std::string& path);

// Writes safetensors, or a torch.save archive when the path ends in .pth, .pt or .bin.
void save_tensor_file(const std::string& path, const StateDict& tensors,
                      const Metadata& metadata = {});

}  // namespace gantry
