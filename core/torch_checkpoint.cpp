// torch.save archives: a restricted unpickler for state_dicts, a pickler for them, and the ZIP
// container through libzip. See torch_checkpoint.h for the format and the contract.
#include "gantry/core/torch_checkpoint.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <unordered_map>

#include "gantry/core/file_bytes.h"
#include "gantry/core/pickle.h"

#if defined(GANTRY_HAVE_LIBZIP)
#include <zip.h>
#endif

namespace gantry {

namespace {

[[noreturn]] void fail(const std::string& name, const std::string& problem) {
  throw std::runtime_error("torch checkpoint '" + name + "': " + problem);
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// The names torch.save files go by.
bool torch_extension(const std::string& path) {
  return ends_with(path, ".pth") || ends_with(path, ".pt") || ends_with(path, ".bin");
}

using pickle::Value;
using namespace pickle;  // the opcodes, for the writer

// torch.<X>Storage <-> the element type it holds (both directions from one table).
struct StorageType {
  DType dtype;
  const char* name;
};
constexpr StorageType kStorageTypes[] = {
    {DType::F32, "FloatStorage"}, {DType::F64, "DoubleStorage"}, {DType::F16, "HalfStorage"},
    {DType::BF16, "BFloat16Storage"}, {DType::I64, "LongStorage"}, {DType::I32, "IntStorage"},
    {DType::I16, "ShortStorage"}, {DType::I8, "CharStorage"}, {DType::U8, "ByteStorage"},
    {DType::BOOL, "BoolStorage"}};

bool storage_dtype(const std::string& module, const std::string& name, DType* out) {
  if (module != "torch") return false;
  for (const auto& t : kStorageTypes)
    if (name == t.name) {
      *out = t.dtype;
      return true;
    }
  return false;
}

[[maybe_unused]] const char* storage_class(DType dtype) {  // unused without libzip
  for (const auto& t : kStorageTypes)
    if (t.dtype == dtype) return t.name;
  return "FloatStorage";
}
// ---- reading: torch's storages and tensors on top of the generic unpickler ----------------

// Storages are looked up in `records` (entry name under the archive's folder -> bytes) when a
// tensor is rebuilt from them. Storage and tensor values are Extension values whose handle
// indexes `storages` / `tensors`.
class TorchHooks : public Hooks {
 public:
  struct StorageRef {
    std::string key;
    int64_t numel = 0;
    DType dtype = DType::F32;
  };
  struct TensorRef {
    Tensor tensor;
    DType dtype = DType::F32;
  };
  std::vector<StorageRef> storages;
  std::vector<TensorRef> tensors;

  TorchHooks(const std::map<std::string, std::vector<uint8_t>>& records, std::size_t decoded_limit)
      : records_(records), decoded_limit_(decoded_limit) {}

  static bool is_tensor(const Value& v) { return v.kind == Value::Kind::Extension && v.s == "tensor"; }

  // ("storage", torch.FloatStorage, "<key>", "<location>", numel) -> a storage.
  Value* persistent_load(Unpickler& u, std::size_t at, Value* pid) override {
    const auto& t = pid->items;
    if (pid->kind != Value::Kind::Tuple || t.size() < 5 || t[0]->kind != Value::Kind::Str || t[0]->s != "storage")
      u.bad(at, "a persistent id that is not ('storage', type, key, location, numel)");
    if (t[1]->kind != Value::Kind::Global || t[2]->kind != Value::Kind::Str || t[4]->kind != Value::Kind::Int)
      u.bad(at, "a malformed storage id");
    StorageRef s;
    if (!storage_dtype(t[1]->s, t[1]->s2, &s.dtype))
      u.bad(at, "storage type " + t[1]->s + "." + t[1]->s2 +
                    " is not supported (gantry reads Float, Double, Half, BFloat16, Long, Int, "
                    "Short, Char, Byte and Bool storages)");
    s.key = t[2]->s;
    s.numel = t[4]->i;
    if (s.numel < 0) u.bad(at, "storage '" + s.key + "' has a negative size");
    auto it = records_.find("data/" + s.key);
    if (it == records_.end()) u.bad(at, "storage '" + s.key + "' has no record data/" + s.key + " in the archive");
    const uint64_t want = static_cast<uint64_t>(s.numel) * dtype_size(s.dtype);
    if (static_cast<uint64_t>(s.numel) > std::numeric_limits<uint64_t>::max() / 8 || it->second.size() != want)
      u.bad(at, "storage '" + s.key + "' holds " + std::to_string(it->second.size()) + " bytes, but its " +
                    std::to_string(s.numel) + " " + dtype_name(s.dtype) + " elements need " +
                    std::to_string(want) + " (truncated or corrupt archive)");
    storages.push_back(s);
    Value* v = u.make(Value::Kind::Extension);
    v->s = "storage";
    v->i = static_cast<int64_t>(storages.size() - 1);
    return v;
  }

  Value* reduce(Unpickler& u, std::size_t at, const std::string& g, Value* args, int depth) override {
    const auto& a = args->items;
    if (g == "torch._utils._rebuild_tensor_v2" || g == "torch._utils._rebuild_tensor") {
      if (a.size() < 4) u.bad(at, g + " with " + std::to_string(a.size()) + " arguments (want at least 4)");
      return rebuild_tensor(u, at, a[0], a[1], a[2], a[3]);
    }
    if (g == "torch._utils._rebuild_parameter" || g == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || !is_tensor(*a[0])) u.bad(at, g + " of something that is not a tensor");
      return a[0];
    }
    if (g == "torch._utils._rebuild_from_type_v2" || g == "torch._tensor._rebuild_from_type_v2") {
      // (func, type, args, state): a tensor subclass; the tensor is func(*args).
      if (a.size() < 3 || a[2]->kind != Value::Kind::Tuple) u.bad(at, g + " with malformed arguments");
      if (depth >= 4) u.bad(at, g + " nested more than 4 deep");  // bounded recursion on any input
      return u.reduce(at, a[0], a[2], depth + 1);
    }
    return nullptr;
  }

 private:
  Value* rebuild_tensor(Unpickler& u, std::size_t at, Value* st, Value* off, Value* size, Value* stride) {
    if (st->kind != Value::Kind::Extension || st->s != "storage")
      u.bad(at, "a tensor whose storage is a " + type_name(*st));
    const StorageRef& storage = storages[static_cast<std::size_t>(st->i)];
    if (off->kind != Value::Kind::Int || off->i < 0) u.bad(at, "a tensor with a bad storage offset");
    auto ints = [&](Value* t, const char* what) {
      if (t->kind != Value::Kind::Tuple) u.bad(at, std::string("a tensor whose ") + what + " is not a tuple");
      std::vector<int64_t> v;
      for (const auto& e : t->items) {
        if (e->kind != Value::Kind::Int || e->i < 0) u.bad(at, std::string("a tensor with a bad ") + what);
        v.push_back(e->i);
      }
      return v;
    };
    const std::vector<int64_t> sz = ints(size, "size"), sd = ints(stride, "stride");
    if (sz.size() != sd.size())
      u.bad(at, "a tensor with " + std::to_string(sz.size()) + " sizes but " + std::to_string(sd.size()) + " strides");
    // The element count and the last element's storage index, without overflow.
    const uint64_t cap = uint64_t{1} << 40;
    uint64_t numel = 1, last = static_cast<uint64_t>(off->i);
    for (std::size_t d = 0; d < sz.size(); ++d) {
      const uint64_t n = static_cast<uint64_t>(sz[d]);
      if (n != 0 && numel > cap / n) u.bad(at, "a tensor of more than 2^40 elements");
      numel *= n;
    }
    if (numel > 0) {
      for (std::size_t d = 0; d < sz.size(); ++d) {
        const uint64_t span = static_cast<uint64_t>(sz[d] - 1);
        if (sd[d] != 0 && span > cap / static_cast<uint64_t>(sd[d])) u.bad(at, "a tensor whose strides reach past 2^40");
        last += span * static_cast<uint64_t>(sd[d]);
      }
      if (last >= static_cast<uint64_t>(storage.numel))
        u.bad(at, "a tensor view reaches element " + std::to_string(last) + " of storage '" + storage.key +
                      "', which has " + std::to_string(storage.numel) + " (corrupt archive)");
    }
    decoded_ += numel * sizeof(float);
    if (decoded_ > decoded_limit_)
      u.bad(at, "the tensors would take " + std::to_string(decoded_) + " bytes as float32, more than " +
                    std::to_string(decoded_limit_) + " for this file (views repeating their storage?)");
    Shape shape(sz.begin(), sz.end());
    Tensor t = Tensor::zeros(shape);
    float* out = t.data();
    const uint8_t* src = records_.at("data/" + storage.key).data();
    const std::size_t es = dtype_size(storage.dtype);
    // Walk the view in row-major order with an index counter (any rank, any strides).
    std::vector<int64_t> idx(sz.size(), 0);
    uint64_t pos = static_cast<uint64_t>(off->i);
    for (uint64_t k = 0; k < numel; ++k) {
      out[k] = decode_element(src + pos * es, storage.dtype);
      for (std::size_t d = sz.size(); d-- > 0;) {
        if (++idx[d] < sz[d]) {
          pos += static_cast<uint64_t>(sd[d]);
          break;
        }
        pos -= static_cast<uint64_t>(sd[d]) * static_cast<uint64_t>(sz[d] - 1);
        idx[d] = 0;
      }
    }
    tensors.push_back({t, storage.dtype});
    Value* r = u.make(Value::Kind::Extension);
    r->s = "tensor";
    r->i = static_cast<int64_t>(tensors.size() - 1);
    return r;
  }

  const std::map<std::string, std::vector<uint8_t>>& records_;
  std::size_t decoded_limit_;
  std::size_t decoded_ = 0;
};

std::string number_text(double f) {
  // The shortest text that reads back as the same double, as Python's repr (2e-04, not
  // 0.00020000000000000001).
  char b[32];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(b, sizeof b, "%.*g", digits, f);
    if (std::strtod(b, nullptr) == f) break;
  }
  return b;
}

std::string scalar_text(const Value& v) {
  switch (v.kind) {
    case Value::Kind::None: return "None";
    case Value::Kind::Bool: return v.i ? "True" : "False";
    case Value::Kind::Int: return std::to_string(v.i);
    case Value::Kind::Float: return number_text(v.f);
    case Value::Kind::Str: return v.s;
    case Value::Kind::Bytes: return "<" + std::to_string(v.s.size()) + " bytes>";
    case Value::Kind::Object: return "<" + type_name(v) + ">";
    case Value::Kind::Array: {
      if (v.shape.empty()) {  // a numpy scalar (np.float64(0.5) as a checkpoint's "best_loss")
        const double x = v.element(0);
        const char k = v.items[0]->s[0];
        if (k == 'b') return x != 0 ? "True" : "False";
        return k == 'f' ? number_text(x) : std::to_string(static_cast<int64_t>(x));
      }
      std::string dims;
      for (int64_t d : v.shape) dims += (dims.empty() ? "" : ",") + std::to_string(d);
      return "<numpy array " + v.items[0]->s + " [" + dims + "]>";
    }
    default: return "<" + type_name(v) + ">";
  }
}

// Dicts (and lists/tuples inside them) -> "a.b.c" names; tensors to `out`, the rest to `meta`.
void flatten(const std::string& file, const TorchHooks& hooks, const Value* v, const std::string& prefix,
             int depth, SafetensorsContents& out, std::set<std::string>& names) {
  if (depth > 64) fail(file, "the object nests deeper than 64 levels at '" + prefix + "' (a cycle?)");
  auto child = [&](const std::string& key) { return prefix.empty() ? key : prefix + "." + key; };
  switch (v->kind) {
    case Value::Kind::Dict:
      for (std::size_t k = 0; k + 1 < v->items.size(); k += 2) {
        const Value& key = *v->items[k];
        if (key.kind != Value::Kind::Str && key.kind != Value::Kind::Int)
          fail(file, "a dict key of type " + type_name(key) + " under '" + prefix +
                         "' (state_dict keys are strings)");
        const std::string ks = key.kind == Value::Kind::Str ? key.s : std::to_string(key.i);
        if (ks.empty()) fail(file, "an empty dict key under '" + prefix + "'");
        flatten(file, hooks, v->items[k + 1], child(ks), depth + 1, out, names);
      }
      return;
    case Value::Kind::List:
    case Value::Kind::Tuple:
      for (std::size_t k = 0; k < v->items.size(); ++k)
        flatten(file, hooks, v->items[k], child(std::to_string(k)), depth + 1, out, names);
      return;
    default:
      if (!names.insert(prefix).second) fail(file, "the name '" + prefix + "' occurs twice");
      if (TorchHooks::is_tensor(*v)) {
        const auto& t = hooks.tensors[static_cast<std::size_t>(v->i)];
        out.tensors.push_back({prefix, t.tensor, t.dtype});
      } else {
        out.metadata[prefix] = scalar_text(*v);
      }
  }
}

// ---- the pickler ----------------------------------------------------------------------------

class Pickler {
 public:
  std::vector<uint8_t> out;
  void op(uint8_t o) { out.push_back(o); }
  void raw(const std::string& s) { out.insert(out.end(), s.begin(), s.end()); }
  void le(uint64_t v, int n) {
    for (int k = 0; k < n; ++k) out.push_back(static_cast<uint8_t>(v >> (8 * k)));
  }
  void str(const std::string& s) {
    op(BINUNICODE);
    le(s.size(), 4);
    raw(s);
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      op(BININT1);
      le(static_cast<uint64_t>(v), 1);
    } else if (v >= 0 && v < 65536) {
      op(BININT2);
      le(static_cast<uint64_t>(v), 2);
    } else if (v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max()) {
      op(BININT);
      le(static_cast<uint64_t>(static_cast<uint32_t>(static_cast<int32_t>(v))), 4);
    } else {
      op(LONG1);
      le(8, 1);
      le(static_cast<uint64_t>(v), 8);
    }
  }
  void real(double f) {  // BINFLOAT: an IEEE double, big-endian
    uint64_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    op(BINFLOAT);
    for (int k = 7; k >= 0; --k) out.push_back(static_cast<uint8_t>(bits >> (8 * k)));
  }
  void global(const std::string& module, const std::string& name) {
    op(GLOBAL);
    raw(module + "\n" + name + "\n");
  }
  void int_tuple(const std::vector<int64_t>& v) {
    if (v.empty()) {
      op(EMPTY_TUPLE);
      return;
    }
    op(MARK);
    for (int64_t x : v) integer(x);
    op(TUPLE);
  }
};

// ---- the ZIP container (libzip) -------------------------------------------------------------

constexpr const char* kNoLibzip =
    "this gantry was built without libzip, so it cannot read or write torch.save files "
    "(scripts/install-deps.sh installs libzip-dev; rebuild). Safetensors files work";

#if defined(GANTRY_HAVE_LIBZIP)
// Every entry of the archive, by name, with its bytes. The uncompressed total is bounded so a
// deflate bomb cannot exhaust memory (torch.save stores its entries uncompressed).
std::map<std::string, std::vector<uint8_t>> read_zip(const uint8_t* data, std::size_t size, const std::string& name) {
  zip_error_t ze;
  zip_error_init(&ze);
  zip_source_t* src = zip_source_buffer_create(data, size, 0, &ze);
  if (!src) fail(name, std::string("libzip: ") + zip_error_strerror(&ze));
  zip_t* za = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
  if (!za) {
    const std::string why = zip_error_strerror(&ze);
    zip_source_free(src);
    zip_error_fini(&ze);
    fail(name, "not a readable ZIP archive (" + why + "); torch.save writes one since PyTorch 1.6");
  }
  zip_error_fini(&ze);
  std::unique_ptr<zip_t, void (*)(zip_t*)> guard(za, zip_discard);
  std::map<std::string, std::vector<uint8_t>> entries;
  const zip_int64_t n = zip_get_num_entries(za, 0);
  const uint64_t limit = 64 * static_cast<uint64_t>(size) + (1u << 20);
  uint64_t total = 0;
  for (zip_int64_t i = 0; i < n; ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(za, static_cast<zip_uint64_t>(i), 0, &st) != 0 || !(st.valid & ZIP_STAT_NAME) ||
        !(st.valid & ZIP_STAT_SIZE))
      fail(name, "ZIP entry " + std::to_string(i) + " cannot be read: " + zip_strerror(za));
    const std::string entry = st.name;
    if (!entry.empty() && entry.back() == '/') continue;  // a folder
    total += st.size;
    if (st.size > limit || total > limit)
      fail(name, "ZIP entry '" + entry + "' unpacks to " + std::to_string(st.size) +
                     " bytes, far more than the file holds (not a checkpoint)");
    std::vector<uint8_t> buf(static_cast<std::size_t>(st.size));
    zip_file_t* f = zip_fopen_index(za, static_cast<zip_uint64_t>(i), 0);
    if (!f) fail(name, "ZIP entry '" + entry + "' cannot be opened: " + zip_strerror(za));
    const zip_int64_t got = buf.empty() ? 0 : zip_fread(f, buf.data(), buf.size());
    uint8_t extra;
    const zip_int64_t more = zip_fread(f, &extra, 1);  // reaching the end checks the CRC
    if (got != static_cast<zip_int64_t>(buf.size()) || more != 0) {
      const std::string why = got < 0 || more < 0 ? zip_file_strerror(f) : "its size is wrong";
      zip_fclose(f);
      fail(name, "ZIP entry '" + entry + "' is damaged: " + why);
    }
    zip_fclose(f);
    entries.emplace(entry, std::move(buf));
  }
  return entries;
}

// A stored (uncompressed) ZIP archive of the given entries, in order, built in memory.
std::vector<uint8_t> write_zip(const std::vector<std::pair<std::string, const std::vector<uint8_t>*>>& entries) {
  auto bad = [](const std::string& what) { throw std::runtime_error("save_torch_checkpoint: libzip: " + what); };
  zip_error_t ze;
  zip_error_init(&ze);
  zip_source_t* mem = zip_source_buffer_create(nullptr, 0, 0, &ze);
  if (!mem) bad(zip_error_strerror(&ze));
  zip_t* za = zip_open_from_source(mem, ZIP_TRUNCATE, &ze);
  if (!za) {
    const std::string why = zip_error_strerror(&ze);
    zip_source_free(mem);
    bad(why);
  }
  zip_error_fini(&ze);
  zip_source_keep(mem);  // survives zip_close, which writes the archive into it
  auto discard = [&](const std::string& what) {
    const std::string why = what + ": " + zip_strerror(za);
    zip_discard(za);
    zip_source_free(mem);
    bad(why);
  };
  for (const auto& [entry, bytes] : entries) {
    zip_source_t* s = zip_source_buffer(za, bytes->empty() ? nullptr : bytes->data(), bytes->size(), 0);
    if (!s) discard("cannot add " + entry);
    const zip_int64_t idx = zip_file_add(za, entry.c_str(), s, ZIP_FL_ENC_UTF_8);
    if (idx < 0) {
      zip_source_free(s);
      discard("cannot add " + entry);
    }
    // Stored, as torch.save writes (its reader maps the storages straight from the file), and
    // with a fixed date so that the same tensors give the same bytes.
    if (zip_set_file_compression(za, static_cast<zip_uint64_t>(idx), ZIP_CM_STORE, 0) != 0 ||
        zip_file_set_mtime(za, static_cast<zip_uint64_t>(idx), 315532800 + 86400, 0) != 0)
      discard("cannot set up " + entry);
  }
  if (zip_close(za) != 0) discard("cannot write the archive");
  std::vector<uint8_t> out;
  if (zip_source_open(mem) != 0) {
    zip_source_free(mem);
    bad("cannot read the archive back");
  }
  zip_source_seek(mem, 0, SEEK_END);
  const zip_int64_t len = zip_source_tell(mem);
  zip_source_seek(mem, 0, SEEK_SET);
  out.resize(len > 0 ? static_cast<std::size_t>(len) : 0);
  const zip_int64_t got = out.empty() ? 0 : zip_source_read(mem, out.data(), out.size());
  zip_source_close(mem);
  zip_source_free(mem);
  if (got != static_cast<zip_int64_t>(out.size())) bad("short read of the archive");
  return out;
}
#endif

// The pre-1.6 format starts with a pickled magic number (protocol 2, LONG1 of 10 bytes).
bool is_legacy_torch(const uint8_t* data, std::size_t size) {
  static const uint8_t kLegacy[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20};
  return size >= sizeof kLegacy && std::memcmp(data, kLegacy, sizeof kLegacy) == 0;
}

}  // namespace

bool torch_checkpoint_supported() {
#if defined(GANTRY_HAVE_LIBZIP)
  return true;
#else
  return false;
#endif
}

SafetensorsContents parse_torch_checkpoint(const uint8_t* data, std::size_t size, const std::string& name) {
  if (is_legacy_torch(data, size))
    fail(name, "is in PyTorch's legacy format (PyTorch < 1.6, or _use_new_zipfile_serialization=False); "
               "load it in PyTorch and save it again with a plain torch.save to get the ZIP format gantry reads");
  if (size < 4 || std::memcmp(data, "PK\x03\x04", 4) != 0)
    fail(name, "is not a torch.save archive (it does not start with a ZIP header)");
#if !defined(GANTRY_HAVE_LIBZIP)
  fail(name, kNoLibzip);
#else
  auto entries = read_zip(data, size, name);
  // The archive's one top folder ("archive/" now, the file's stem in older PyTorch).
  for (const auto& [entry, bytes] : entries)
    if (ends_with(entry, "/constants.pkl") || entry.find("/code/") != std::string::npos)
      fail(name, "is a TorchScript archive (torch.jit.save), not a torch.save state_dict: in PyTorch, "
                 "torch.save(torch.jit.load(path).state_dict(), 'weights.pth') gives one gantry reads");
  std::string prefix;
  for (const auto& [entry, bytes] : entries) {
    const auto slash = entry.find('/');
    if (slash != std::string::npos && entry.compare(slash, std::string::npos, "/data.pkl") == 0) {
      prefix = entry.substr(0, slash + 1);
      break;
    }
  }
  if (prefix.empty()) fail(name, "is a ZIP archive without <folder>/data.pkl, so not one torch.save wrote");
  std::map<std::string, std::vector<uint8_t>> records;  // moved, not copied: storages can be large
  for (auto& [entry, bytes] : entries)
    if (entry.compare(0, prefix.size(), prefix) == 0) records.emplace(entry.substr(prefix.size()), std::move(bytes));
  auto order = records.find("byteorder");
  if (order != records.end()) {
    std::string bo(order->second.begin(), order->second.end());
    while (!bo.empty() && (bo.back() == '\n' || bo.back() == ' ')) bo.pop_back();
    if (bo != "little") fail(name, "stores its tensors " + bo + "-endian; gantry reads little-endian files");
  }
  const std::size_t decoded_limit = 16 * size + (1u << 20);
  TorchHooks hooks(records, decoded_limit);
  const std::vector<uint8_t>& pkl = records.at("data.pkl");
  Unpickler up(pkl.data(), pkl.size(), "torch checkpoint '" + name + "': data.pkl", &hooks);
  const Value* root = up.run();
  if (root->kind == Value::Kind::Object)
    fail(name, "holds a pickled Python object of class " + root->s + "." + root->s2 +
                   " (torch.save(model)?), not a state_dict: save model.state_dict() instead");
  if (root->kind != Value::Kind::Dict)
    fail(name, "holds a " + type_name(*root) + ", not a dict of tensors (a state_dict)");
  SafetensorsContents out;
  std::set<std::string> names;
  flatten(name, hooks, root, "", 0, out, names);
  return out;
#endif
}

SafetensorsContents load_torch_checkpoint(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path, "torch checkpoint");
  return parse_torch_checkpoint(bytes.data(), bytes.size(), path);
}

namespace {

#if defined(GANTRY_HAVE_LIBZIP)
// Pickles a TorchValue tree as torch.save would the same object; each tensor's elements go to
// their own storage record.
class ObjectWriter {
 public:
  Pickler pk;
  std::vector<std::vector<uint8_t>> storages;

  void value(const TorchValue& v, const std::string& where, int depth) {
    if (depth > 64) throw std::invalid_argument("save_torch_object: nesting deeper than 64 levels at '" + where + "'");
    using K = TorchValue::Kind;
    auto at = [&](const std::string& key) { return where.empty() ? key : where + "." + key; };
    switch (v.kind()) {
      case K::None: pk.op(NONE); return;
      case K::Bool: pk.op(v.flag() ? NEWTRUE : NEWFALSE); return;
      case K::Int: pk.integer(v.int_value()); return;
      case K::Float: pk.real(v.float_value()); return;
      case K::Str: pk.str(v.str()); return;
      case K::Tensor: tensor(v.tensor_value(), v.dtype(), where); return;
      case K::List:
        pk.op(EMPTY_LIST);
        if (v.items().empty()) return;
        pk.op(MARK);
        for (std::size_t k = 0; k < v.items().size(); ++k) value(v.items()[k], at(std::to_string(k)), depth + 1);
        pk.op(APPENDS);
        return;
      case K::Tuple:
        if (v.items().empty()) {
          pk.op(EMPTY_TUPLE);
          return;
        }
        pk.op(MARK);
        for (std::size_t k = 0; k < v.items().size(); ++k) value(v.items()[k], at(std::to_string(k)), depth + 1);
        pk.op(TUPLE);
        return;
      case K::Dict:
        if (v.ordered()) {
          pk.global("collections", "OrderedDict");
          pk.op(EMPTY_TUPLE);
          pk.op(REDUCE);
        } else {
          pk.op(EMPTY_DICT);
        }
        if (v.items().empty()) return;
        pk.op(MARK);
        for (std::size_t k = 0; k + 1 < v.items().size(); k += 2) {
          const TorchValue& key = v.items()[k];
          value(key, where, depth + 1);
          value(v.items()[k + 1],
                at(key.kind() == K::Str ? key.str() : std::to_string(key.int_value())), depth + 1);
        }
        pk.op(SETITEMS);
        return;
    }
  }

 private:
  void tensor(const Tensor& t, DType dtype, const std::string& name) {
    const std::vector<float> values = t.to_vector();  // host copy from any device
    const std::size_t es = dtype_size(dtype);
    std::vector<uint8_t> bytes(values.size() * es);
    for (std::size_t i = 0; i < values.size(); ++i)
      encode_element(values[i], dtype, bytes.data() + i * es, "save_torch_checkpoint", name,
                     static_cast<int64_t>(i));
    const Shape& shape = t.shape();
    std::vector<int64_t> size(shape.begin(), shape.end()), stride(shape.size());
    int64_t step = 1;
    for (std::size_t d = shape.size(); d-- > 0;) {
      stride[d] = step;
      step *= shape[d];
    }
    pk.global("torch._utils", "_rebuild_tensor_v2");
    pk.op(MARK);
    pk.op(MARK);  // the persistent id of the storage
    pk.str("storage");
    pk.global("torch", storage_class(dtype));
    pk.str(std::to_string(storages.size()));
    pk.str("cpu");
    pk.integer(static_cast<int64_t>(values.size()));
    pk.op(TUPLE);
    pk.op(BINPERSID);
    pk.integer(0);  // storage offset
    pk.int_tuple(size);
    pk.int_tuple(stride);
    pk.op(NEWFALSE);  // requires_grad
    pk.global("collections", "OrderedDict");  // backward hooks: none
    pk.op(EMPTY_TUPLE);
    pk.op(REDUCE);
    pk.op(TUPLE);
    pk.op(REDUCE);
    storages.push_back(std::move(bytes));
  }
};
#endif

}  // namespace

TorchValue TorchValue::boolean(bool b) {
  TorchValue v;
  v.kind_ = Kind::Bool;
  v.i_ = b;
  return v;
}
TorchValue TorchValue::integer(int64_t i) {
  TorchValue v;
  v.kind_ = Kind::Int;
  v.i_ = i;
  return v;
}
TorchValue TorchValue::real(double f) {
  TorchValue v;
  v.kind_ = Kind::Float;
  v.f_ = f;
  return v;
}
TorchValue TorchValue::string(std::string s) {
  TorchValue v;
  v.kind_ = Kind::Str;
  v.s_ = std::move(s);
  return v;
}
TorchValue TorchValue::tensor(const Tensor& t, DType dtype) {
  if (!t.defined()) throw std::invalid_argument("TorchValue::tensor: the tensor is undefined");
  TorchValue v;
  v.kind_ = Kind::Tensor;
  v.t_ = t;
  v.dtype_ = dtype;
  return v;
}
TorchValue TorchValue::list(std::vector<TorchValue> items) {
  TorchValue v;
  v.kind_ = Kind::List;
  v.items_ = std::move(items);
  return v;
}
TorchValue TorchValue::tuple(std::vector<TorchValue> items) {
  TorchValue v = list(std::move(items));
  v.kind_ = Kind::Tuple;
  return v;
}
TorchValue TorchValue::dict() {
  TorchValue v;
  v.kind_ = Kind::Dict;
  return v;
}
TorchValue TorchValue::ordered_dict() {
  TorchValue v = dict();
  v.ordered_ = true;
  return v;
}

TorchValue TorchValue::state_dict(const StateDict& tensors) {
  TorchValue d = ordered_dict();
  std::set<std::string> seen;
  d.items_.reserve(2 * tensors.size());
  for (const auto& e : tensors) {
    if (e.name.empty()) throw std::invalid_argument("save_torch_checkpoint: a tensor has an empty name");
    if (!seen.insert(e.name).second)
      throw std::invalid_argument("save_torch_checkpoint: duplicate tensor name '" + e.name + "'");
    if (!e.tensor.defined())
      throw std::invalid_argument("save_torch_checkpoint: tensor '" + e.name + "' is undefined");
    d.items_.push_back(string(e.name));  // appended directly: names were checked just above
    d.items_.push_back(tensor(e.tensor, e.dtype));
  }
  return d;
}

TorchValue& TorchValue::set_item(TorchValue key, TorchValue value) {
  if (kind_ != Kind::Dict) throw std::logic_error("TorchValue::set on a value that is not a dict");
  for (std::size_t k = 0; k < items_.size(); k += 2) {
    const TorchValue& old = items_[k];
    if (old.kind_ == key.kind_ && old.i_ == key.i_ && old.s_ == key.s_)
      throw std::invalid_argument("TorchValue::set: the key '" +
                                  (key.kind_ == Kind::Str ? key.s_ : std::to_string(key.i_)) +
                                  "' is already in the dict");
  }
  items_.push_back(std::move(key));
  items_.push_back(std::move(value));
  return *this;
}
TorchValue& TorchValue::set(const std::string& key, TorchValue value) {
  if (key.empty()) throw std::invalid_argument("TorchValue::set: an empty key");
  return set_item(string(key), std::move(value));
}
TorchValue& TorchValue::set(int64_t key, TorchValue value) { return set_item(integer(key), std::move(value)); }
TorchValue& TorchValue::push(TorchValue value) {
  if (kind_ != Kind::List) throw std::logic_error("TorchValue::push on a value that is not a list");
  items_.push_back(std::move(value));
  return *this;
}

std::vector<uint8_t> serialize_torch_object(const TorchValue& root) {
#if !defined(GANTRY_HAVE_LIBZIP)
  (void)root;
  throw std::runtime_error(std::string("save_torch_checkpoint: ") + kNoLibzip);
#else
  ObjectWriter w;
  w.pk.op(PROTO);
  w.pk.le(2, 1);
  w.value(root, "", 0);
  w.pk.op(STOP);

  static const std::vector<uint8_t> kVersion = {'3', '\n'};
  static const std::vector<uint8_t> kByteOrder = {'l', 'i', 't', 't', 'l', 'e'};
  // torch.save's order: data.pkl first (its reader names the folder after the first entry).
  std::vector<std::pair<std::string, const std::vector<uint8_t>*>> entries;
  entries.emplace_back("archive/data.pkl", &w.pk.out);
  entries.emplace_back("archive/byteorder", &kByteOrder);
  for (std::size_t k = 0; k < w.storages.size(); ++k)
    entries.emplace_back("archive/data/" + std::to_string(k), &w.storages[k]);
  entries.emplace_back("archive/version", &kVersion);
  return write_zip(entries);
#endif
}

void save_torch_object(const std::string& path, const TorchValue& root) {
  const std::vector<uint8_t> bytes = serialize_torch_object(root);
  write_file_atomic(path, bytes.data(), bytes.size(), "save_torch_checkpoint");
}

std::vector<uint8_t> serialize_torch_checkpoint(const StateDict& tensors) {
  return serialize_torch_object(TorchValue::state_dict(tensors));
}

void save_torch_checkpoint(const std::string& path, const StateDict& tensors) {
  const std::vector<uint8_t> bytes = serialize_torch_checkpoint(tensors);
  write_file_atomic(path, bytes.data(), bytes.size(), "save_torch_checkpoint");
}

bool is_torch_checkpoint_path(const std::string& path) { return torch_extension(path); }

SafetensorsContents load_tensor_file(const std::string& path) {
  // One read; the first bytes say which format. A file named .pth that is neither goes to the
  // torch reader too, which says why it is not one.
  const std::vector<uint8_t> bytes = read_file_bytes(path, "checkpoint");
  const bool zip = bytes.size() >= 4 && std::memcmp(bytes.data(), "PK\x03\x04", 4) == 0;
  if (zip || is_legacy_torch(bytes.data(), bytes.size()) || torch_extension(path))
    return parse_torch_checkpoint(bytes.data(), bytes.size(), path);
  return parse_safetensors(bytes.data(), bytes.size(), path);
}

void save_tensor_file(const std::string& path, const StateDict& tensors, const Metadata& metadata) {
  if (torch_extension(path)) {
    save_torch_checkpoint(path, tensors);
    return;
  }
  save_safetensors(path, tensors, metadata);
}

}  // namespace gantry
