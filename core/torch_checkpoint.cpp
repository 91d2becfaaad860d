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

// The pickle opcodes this reader and writer use (Python's Lib/pickletools.py documents them).
enum Op : uint8_t {
  MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', DUP = '2', NONE = 'N', BININT = 'J',
  BININT1 = 'K', BININT2 = 'M', BINFLOAT = 'G', BINSTRING = 'T', SHORT_BINSTRING = 'U',
  BINUNICODE = 'X', BINBYTES = 'B', SHORT_BINBYTES = 'C', EMPTY_TUPLE = ')', TUPLE = 't',
  EMPTY_LIST = ']', APPEND = 'a', APPENDS = 'e', EMPTY_DICT = '}', SETITEM = 's',
  SETITEMS = 'u', GLOBAL = 'c', REDUCE = 'R', BUILD = 'b', BINPERSID = 'Q', BINPUT = 'q',
  LONG_BINPUT = 'r', BINGET = 'h', LONG_BINGET = 'j', PROTO = 0x80, NEWOBJ = 0x81,
  TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87, NEWTRUE = 0x88, NEWFALSE = 0x89, LONG1 = 0x8a,
  LONG4 = 0x8b, SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d, BINBYTES8 = 0x8e,
  NEWOBJ_EX = 0x92, STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95,
};

// A pickled value. Only what a state_dict is made of; any other object is an Object that
// records its class name (nothing of it is ever run). Values belong to the Unpickler that made
// them (an arena): a pickle can make cycles (a list holding itself, through the memo), which
// shared ownership would leak.
struct Py;
using PyRef = Py*;
struct Py {
  enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor, Object };
  Kind kind = Kind::None;
  int64_t i = 0;                 // Bool, Int; Storage: element count
  double f = 0;                  // Float
  std::string s, s2;             // Str/Bytes: s; Global/Object: module s, name s2; Storage: key s
  std::vector<PyRef> items;      // Tuple/List; Dict: key, value, key, value, ...
  DType dtype = DType::F32;      // Storage, Tensor
  Tensor tensor;                 // Tensor
};

const char* kind_name(Py::Kind k) {
  switch (k) {
    case Py::Kind::None: return "None";
    case Py::Kind::Bool: return "bool";
    case Py::Kind::Int: return "int";
    case Py::Kind::Float: return "float";
    case Py::Kind::Str: return "str";
    case Py::Kind::Bytes: return "bytes";
    case Py::Kind::Tuple: return "tuple";
    case Py::Kind::List: return "list";
    case Py::Kind::Dict: return "dict";
    case Py::Kind::Global: return "global";
    case Py::Kind::Storage: return "storage";
    case Py::Kind::Tensor: return "tensor";
    case Py::Kind::Object: return "object";
  }
  return "?";
}

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

// ---- the unpickler ------------------------------------------------------------------------

// Runs data.pkl. Storages are looked up in `records` (entry name under the archive's folder ->
// bytes) when a tensor is rebuilt from them.
class Unpickler {
 public:
  Unpickler(const std::vector<uint8_t>& pkl, const std::map<std::string, std::vector<uint8_t>>& records,
            std::string name, std::size_t decoded_limit)
      : p_(pkl), records_(records), name_(std::move(name)), decoded_limit_(decoded_limit) {}

  // The object data.pkl builds; it lives as long as this Unpickler.
  PyRef run() {
    for (;;) {
      const std::size_t at = pos_;
      const uint8_t op = byte();
      switch (op) {
        case PROTO: byte(); break;
        case FRAME: bytes(8); break;
        case STOP:
          if (stack_.size() != 1 || !marks_.empty())
            bad(at, "STOP with " + std::to_string(stack_.size()) + " values on the stack (want 1)");
          return stack_.back();
        case MARK: marks_.push_back(stack_.size()); break;
        case POP: pop(at); break;
        case POP_MARK: take_to_mark(at); break;
        case DUP: stack_.push_back(top(at)); break;
        case NONE: stack_.push_back(make(Py::Kind::None)); break;
        case NEWTRUE: case NEWFALSE: {
          auto v = make(Py::Kind::Bool);
          v->i = op == NEWTRUE;
          stack_.push_back(v);
          break;
        }
        case BININT: push_int(static_cast<int32_t>(le(4))); break;
        case BININT1: push_int(byte()); break;
        case BININT2: push_int(static_cast<int64_t>(le(2))); break;
        case LONG1: push_long(at, byte()); break;
        case LONG4: push_long(at, le(4)); break;
        case BINFLOAT: {
          const uint8_t* b = bytes(8);
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = bits << 8 | b[k];  // big-endian, unlike the rest
          auto v = make(Py::Kind::Float);
          std::memcpy(&v->f, &bits, 8);
          stack_.push_back(v);
          break;
        }
        case BINUNICODE: case BINSTRING: push_str(Py::Kind::Str, le(4)); break;
        case SHORT_BINUNICODE: case SHORT_BINSTRING: push_str(Py::Kind::Str, byte()); break;
        case BINUNICODE8: push_str(Py::Kind::Str, le(8)); break;
        case BINBYTES: push_str(Py::Kind::Bytes, le(4)); break;
        case SHORT_BINBYTES: push_str(Py::Kind::Bytes, byte()); break;
        case BINBYTES8: push_str(Py::Kind::Bytes, le(8)); break;
        case EMPTY_TUPLE: stack_.push_back(make(Py::Kind::Tuple)); break;
        case TUPLE: {
          auto t = make(Py::Kind::Tuple);
          t->items = take_to_mark(at);
          stack_.push_back(t);
          break;
        }
        case TUPLE1: case TUPLE2: case TUPLE3: {
          const std::size_t n = op - TUPLE1 + 1;
          if (stack_.size() < n + base()) bad(at, "TUPLE" + std::to_string(n) + " on a short stack");
          auto t = make(Py::Kind::Tuple);
          t->items.assign(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
          stack_.resize(stack_.size() - n);
          stack_.push_back(t);
          break;
        }
        case EMPTY_LIST: stack_.push_back(make(Py::Kind::List)); break;
        case APPEND: {
          PyRef v = pop(at);
          PyRef l = top(at);
          if (l->kind != Py::Kind::List) bad(at, std::string("APPEND to a ") + kind_name(l->kind));
          l->items.push_back(v);
          break;
        }
        case APPENDS: {
          std::vector<PyRef> vs = take_to_mark(at);
          PyRef l = top(at);
          if (l->kind != Py::Kind::List) bad(at, std::string("APPENDS to a ") + kind_name(l->kind));
          l->items.insert(l->items.end(), vs.begin(), vs.end());
          break;
        }
        case EMPTY_DICT: stack_.push_back(make(Py::Kind::Dict)); break;
        case SETITEM: {
          PyRef v = pop(at);
          PyRef k = pop(at);
          set_items(at, top(at), {k, v});
          break;
        }
        case SETITEMS: {
          std::vector<PyRef> kv = take_to_mark(at);
          if (kv.size() % 2) bad(at, "SETITEMS with an odd number of values");
          set_items(at, top(at), kv);
          break;
        }
        case GLOBAL: {
          auto g = make(Py::Kind::Global);
          g->s = line(at);
          g->s2 = line(at);
          stack_.push_back(g);
          break;
        }
        case STACK_GLOBAL: {
          PyRef n = pop(at), m = pop(at);
          if (m->kind != Py::Kind::Str || n->kind != Py::Kind::Str) bad(at, "STACK_GLOBAL of non-strings");
          auto g = make(Py::Kind::Global);
          g->s = m->s;
          g->s2 = n->s;
          stack_.push_back(g);
          break;
        }
        case REDUCE: {
          PyRef args = pop(at);
          PyRef fn = pop(at);
          stack_.push_back(reduce(at, fn, args));
          break;
        }
        case NEWOBJ: case NEWOBJ_EX: {
          if (op == NEWOBJ_EX) pop(at);  // kwargs
          pop(at);                       // args
          PyRef cls = pop(at);
          stack_.push_back(object_of(cls));
          break;
        }
        case BUILD:
          // An object's state (an OrderedDict's _metadata, a module's __dict__): not needed for
          // the tensors, so dropped.
          pop(at);
          top(at);
          break;
        case BINPERSID: stack_.push_back(storage(at, pop(at))); break;
        case BINPUT: memo_[byte()] = top(at); break;
        case LONG_BINPUT: memo_[le(4)] = top(at); break;
        case MEMOIZE: memo_[memo_.size()] = top(at); break;
        case BINGET: get(at, byte()); break;
        case LONG_BINGET: get(at, le(4)); break;
        default: {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op);
          bad(at, std::string("pickle opcode ") + hex +
                      " is not one a state_dict uses (a pickle gantry cannot read)");
        }
      }
    }
  }

 private:
  PyRef make(Py::Kind k) {
    arena_.push_back(std::make_unique<Py>());
    arena_.back()->kind = k;
    return arena_.back().get();
  }
  [[noreturn]] void bad(std::size_t at, const std::string& what) const {
    fail(name_, "data.pkl at byte " + std::to_string(at) + ": " + what);
  }
  uint8_t byte() {
    if (pos_ >= p_.size()) bad(pos_, "the pickle ends without STOP (truncated?)");
    return p_[pos_++];
  }
  const uint8_t* bytes(uint64_t n) {
    if (n > p_.size() - pos_) bad(pos_, "a " + std::to_string(n) + "-byte field runs past the end of the pickle (truncated?)");
    const uint8_t* b = p_.data() + pos_;
    pos_ += static_cast<std::size_t>(n);
    return b;
  }
  uint64_t le(int n) {
    const uint8_t* b = bytes(static_cast<uint64_t>(n));
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = v << 8 | b[k];
    return v;
  }
  std::string line(std::size_t at) {
    const std::size_t start = pos_;
    while (pos_ < p_.size() && p_[pos_] != '\n') ++pos_;
    if (pos_ >= p_.size()) bad(at, "GLOBAL without its newline (truncated?)");
    return std::string(reinterpret_cast<const char*>(p_.data()) + start, pos_++ - start);
  }
  std::size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  PyRef pop(std::size_t at) {
    if (stack_.size() <= base()) bad(at, "pop from an empty stack (or past a MARK)");
    PyRef v = stack_.back();
    stack_.pop_back();
    return v;
  }
  PyRef top(std::size_t at) {
    if (stack_.size() <= base()) bad(at, "an opcode needs a value and the stack is empty");
    return stack_.back();
  }
  std::vector<PyRef> take_to_mark(std::size_t at) {
    if (marks_.empty()) bad(at, "no MARK to take values back to");
    const std::size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PyRef> vs(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return vs;
  }
  void get(std::size_t at, uint64_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) bad(at, "memo entry " + std::to_string(key) + " was never stored");
    stack_.push_back(it->second);
  }
  void push_int(int64_t v) {
    auto p = make(Py::Kind::Int);
    p->i = v;
    stack_.push_back(p);
  }
  void push_long(std::size_t at, uint64_t n) {
    if (n > 8) bad(at, "an integer of " + std::to_string(n) + " bytes (gantry reads up to 64-bit integers)");
    const uint8_t* b = bytes(n);
    uint64_t v = 0;
    for (uint64_t k = n; k-- > 0;) v = v << 8 | b[k];
    if (n > 0 && n < 8 && (b[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign-extend
    int64_t s;
    std::memcpy(&s, &v, 8);
    push_int(s);
  }
  void push_str(Py::Kind k, uint64_t n) {
    const uint8_t* b = bytes(n);
    auto p = make(k);
    p->s.assign(reinterpret_cast<const char*>(b), static_cast<std::size_t>(n));
    stack_.push_back(p);
  }
  void set_items(std::size_t at, PyRef d, const std::vector<PyRef>& kv) {
    if (d->kind == Py::Kind::Object) return;  // a custom class's items: not read
    if (d->kind != Py::Kind::Dict) bad(at, std::string("SETITEM(S) on a ") + kind_name(d->kind));
    d->items.insert(d->items.end(), kv.begin(), kv.end());
  }
  PyRef object_of(PyRef cls) {
    auto o = make(Py::Kind::Object);
    if (cls->kind == Py::Kind::Global) {
      o->s = cls->s;
      o->s2 = cls->s2;
    } else {
      o->s = "?";
      o->s2 = kind_name(cls->kind);
    }
    return o;
  }

  // ("storage", torch.FloatStorage, "<key>", "<location>", numel) -> a Storage.
  PyRef storage(std::size_t at, PyRef pid) {
    const auto& t = pid->items;
    if (pid->kind != Py::Kind::Tuple || t.size() < 5 || t[0]->kind != Py::Kind::Str || t[0]->s != "storage")
      bad(at, "a persistent id that is not ('storage', type, key, location, numel)");
    if (t[1]->kind != Py::Kind::Global || t[2]->kind != Py::Kind::Str || t[4]->kind != Py::Kind::Int)
      bad(at, "a malformed storage id");
    auto s = make(Py::Kind::Storage);
    if (!storage_dtype(t[1]->s, t[1]->s2, &s->dtype))
      bad(at, "storage type " + t[1]->s + "." + t[1]->s2 +
                  " is not supported (gantry reads Float, Double, Half, BFloat16, Long, Int, "
                  "Short, Char, Byte and Bool storages)");
    s->s = t[2]->s;
    s->i = t[4]->i;
    if (s->i < 0) bad(at, "storage '" + s->s + "' has a negative size");
    auto it = records_.find("data/" + s->s);
    if (it == records_.end()) bad(at, "storage '" + s->s + "' has no record data/" + s->s + " in the archive");
    const uint64_t want = static_cast<uint64_t>(s->i) * dtype_size(s->dtype);
    if (static_cast<uint64_t>(s->i) > std::numeric_limits<uint64_t>::max() / 8 || it->second.size() != want)
      bad(at, "storage '" + s->s + "' holds " + std::to_string(it->second.size()) + " bytes, but its " +
                  std::to_string(s->i) + " " + dtype_name(s->dtype) + " elements need " +
                  std::to_string(want) + " (truncated or corrupt archive)");
    return s;
  }

  static std::string global_name(PyRef g) { return g->s + "." + g->s2; }

  PyRef reduce(std::size_t at, PyRef fn, PyRef args, int depth = 0) {
    if (fn->kind != Py::Kind::Global) bad(at, std::string("REDUCE of a ") + kind_name(fn->kind));
    if (args->kind != Py::Kind::Tuple) bad(at, "REDUCE with arguments that are not a tuple");
    const std::string g = global_name(fn);
    const auto& a = args->items;
    if (g == "collections.OrderedDict") {
      if (!a.empty()) bad(at, "OrderedDict(...) with arguments (gantry reads an empty one filled by SETITEMS)");
      return make(Py::Kind::Dict);
    }
    if (g == "torch._utils._rebuild_tensor_v2" || g == "torch._utils._rebuild_tensor") {
      if (a.size() < 4) bad(at, g + " with " + std::to_string(a.size()) + " arguments (want at least 4)");
      return rebuild_tensor(at, a[0], a[1], a[2], a[3]);
    }
    if (g == "torch._utils._rebuild_parameter" || g == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || a[0]->kind != Py::Kind::Tensor) bad(at, g + " of something that is not a tensor");
      return a[0];
    }
    if (g == "torch._utils._rebuild_from_type_v2" || g == "torch._tensor._rebuild_from_type_v2") {
      // (func, type, args, state): a tensor subclass; the tensor is func(*args).
      if (a.size() < 3 || a[2]->kind != Py::Kind::Tuple) bad(at, g + " with malformed arguments");
      if (depth >= 4) bad(at, g + " nested more than 4 deep");  // bounded recursion on any input
      return reduce(at, a[0], a[2], depth + 1);
    }
    return object_of(fn);  // any other call: an object we do not open
  }

  PyRef rebuild_tensor(std::size_t at, PyRef st, PyRef off, PyRef size, PyRef stride) {
    if (st->kind != Py::Kind::Storage) bad(at, "a tensor whose storage is a " + std::string(kind_name(st->kind)));
    if (off->kind != Py::Kind::Int || off->i < 0) bad(at, "a tensor with a bad storage offset");
    auto ints = [&](PyRef t, const char* what) {
      if (t->kind != Py::Kind::Tuple) bad(at, std::string("a tensor whose ") + what + " is not a tuple");
      std::vector<int64_t> v;
      for (const auto& e : t->items) {
        if (e->kind != Py::Kind::Int || e->i < 0) bad(at, std::string("a tensor with a bad ") + what);
        v.push_back(e->i);
      }
      return v;
    };
    const std::vector<int64_t> sz = ints(size, "size"), sd = ints(stride, "stride");
    if (sz.size() != sd.size())
      bad(at, "a tensor with " + std::to_string(sz.size()) + " sizes but " + std::to_string(sd.size()) + " strides");
    // The element count and the last element's storage index, without overflow.
    const uint64_t cap = uint64_t{1} << 40;
    uint64_t numel = 1, last = static_cast<uint64_t>(off->i);
    for (std::size_t d = 0; d < sz.size(); ++d) {
      const uint64_t n = static_cast<uint64_t>(sz[d]);
      if (n != 0 && numel > cap / n) bad(at, "a tensor of more than 2^40 elements");
      numel *= n;
    }
    if (numel > 0) {
      for (std::size_t d = 0; d < sz.size(); ++d) {
        const uint64_t span = static_cast<uint64_t>(sz[d] - 1);
        if (sd[d] != 0 && span > cap / static_cast<uint64_t>(sd[d])) bad(at, "a tensor whose strides reach past 2^40");
        last += span * static_cast<uint64_t>(sd[d]);
      }
      if (last >= static_cast<uint64_t>(st->i))
        bad(at, "a tensor view reaches element " + std::to_string(last) + " of storage '" + st->s +
                    "', which has " + std::to_string(st->i) + " (corrupt archive)");
    }
    decoded_ += numel * sizeof(float);
    if (decoded_ > decoded_limit_)
      bad(at, "the tensors would take " + std::to_string(decoded_) + " bytes as float32, more than " +
                  std::to_string(decoded_limit_) + " for this file (views repeating their storage?)");
    Shape shape(sz.begin(), sz.end());
    Tensor t = Tensor::zeros(shape);
    float* out = t.data();
    const uint8_t* src = records_.at("data/" + st->s).data();
    const std::size_t es = dtype_size(st->dtype);
    // Walk the view in row-major order with an index counter (any rank, any strides).
    std::vector<int64_t> idx(sz.size(), 0);
    uint64_t pos = static_cast<uint64_t>(off->i);
    for (uint64_t k = 0; k < numel; ++k) {
      out[k] = decode_element(src + pos * es, st->dtype);
      for (std::size_t d = sz.size(); d-- > 0;) {
        if (++idx[d] < sz[d]) {
          pos += static_cast<uint64_t>(sd[d]);
          break;
        }
        pos -= static_cast<uint64_t>(sd[d]) * static_cast<uint64_t>(sz[d] - 1);
        idx[d] = 0;
      }
    }
    auto r = make(Py::Kind::Tensor);
    r->tensor = t;
    r->dtype = st->dtype;
    return r;
  }

  const std::vector<uint8_t>& p_;
  const std::map<std::string, std::vector<uint8_t>>& records_;
  std::string name_;
  std::size_t decoded_limit_;
  std::size_t decoded_ = 0;
  std::size_t pos_ = 0;
  std::vector<std::unique_ptr<Py>> arena_;
  std::vector<PyRef> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<uint64_t, PyRef> memo_;
};

std::string scalar_text(const Py& v) {
  switch (v.kind) {
    case Py::Kind::None: return "None";
    case Py::Kind::Bool: return v.i ? "True" : "False";
    case Py::Kind::Int: return std::to_string(v.i);
    case Py::Kind::Float: {
      // The shortest text that reads back as the same double, as Python's repr (2e-04, not
      // 0.00020000000000000001).
      char b[32];
      for (int digits = 1; digits <= 17; ++digits) {
        std::snprintf(b, sizeof b, "%.*g", digits, v.f);
        if (std::strtod(b, nullptr) == v.f) break;
      }
      return b;
    }
    case Py::Kind::Str: return v.s;
    case Py::Kind::Bytes: return "<" + std::to_string(v.s.size()) + " bytes>";
    case Py::Kind::Object: return "<object of class " + v.s + "." + v.s2 + ">";
    default: return std::string("<") + kind_name(v.kind) + ">";
  }
}

// Dicts (and lists/tuples inside them) -> "a.b.c" names; tensors to `out`, the rest to `meta`.
void flatten(const std::string& file, PyRef v, const std::string& prefix, int depth,
             SafetensorsContents& out, std::set<std::string>& names) {
  if (depth > 64) fail(file, "the object nests deeper than 64 levels at '" + prefix + "' (a cycle?)");
  auto child = [&](const std::string& key) { return prefix.empty() ? key : prefix + "." + key; };
  switch (v->kind) {
    case Py::Kind::Dict:
      for (std::size_t k = 0; k + 1 < v->items.size(); k += 2) {
        const Py& key = *v->items[k];
        if (key.kind != Py::Kind::Str && key.kind != Py::Kind::Int)
          fail(file, std::string("a dict key of type ") + kind_name(key.kind) + " under '" + prefix +
                         "' (state_dict keys are strings)");
        const std::string ks = key.kind == Py::Kind::Str ? key.s : std::to_string(key.i);
        if (ks.empty()) fail(file, "an empty dict key under '" + prefix + "'");
        flatten(file, v->items[k + 1], child(ks), depth + 1, out, names);
      }
      return;
    case Py::Kind::List:
    case Py::Kind::Tuple:
      for (std::size_t k = 0; k < v->items.size(); ++k)
        flatten(file, v->items[k], child(std::to_string(k)), depth + 1, out, names);
      return;
    case Py::Kind::Tensor:
      if (!names.insert(prefix).second) fail(file, "the name '" + prefix + "' occurs twice");
      out.tensors.push_back({prefix, v->tensor, v->dtype});
      return;
    default:
      if (!names.insert(prefix).second) fail(file, "the name '" + prefix + "' occurs twice");
      out.metadata[prefix] = scalar_text(*v);
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
  Unpickler up(records.at("data.pkl"), records, name, decoded_limit);
  const PyRef root = up.run();
  if (root->kind == Py::Kind::Object)
    fail(name, "holds a pickled Python object of class " + root->s + "." + root->s2 +
                   " (torch.save(model)?), not a state_dict: save model.state_dict() instead");
  if (root->kind != Py::Kind::Dict)
    fail(name, std::string("holds a ") + kind_name(root->kind) + ", not a dict of tensors (a state_dict)");
  SafetensorsContents out;
  std::set<std::string> names;
  flatten(name, root, "", 0, out, names);
  return out;
#endif
}

SafetensorsContents load_torch_checkpoint(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path, "torch checkpoint");
  return parse_torch_checkpoint(bytes.data(), bytes.size(), path);
}

std::vector<uint8_t> serialize_torch_checkpoint(const StateDict& tensors) {
#if !defined(GANTRY_HAVE_LIBZIP)
  (void)tensors;
  throw std::runtime_error(std::string("save_torch_checkpoint: ") + kNoLibzip);
#else
  std::set<std::string> seen;
  std::vector<std::vector<uint8_t>> storages;
  Pickler pk;
  pk.op(PROTO);
  pk.le(2, 1);
  pk.global("collections", "OrderedDict");
  pk.op(EMPTY_TUPLE);
  pk.op(REDUCE);
  pk.op(MARK);
  for (const auto& e : tensors) {
    if (e.name.empty()) throw std::invalid_argument("save_torch_checkpoint: a tensor has an empty name");
    if (!seen.insert(e.name).second)
      throw std::invalid_argument("save_torch_checkpoint: duplicate tensor name '" + e.name + "'");
    if (!e.tensor.defined())
      throw std::invalid_argument("save_torch_checkpoint: tensor '" + e.name + "' is undefined");
    const std::vector<float> values = e.tensor.to_vector();  // host copy from any device
    const std::size_t es = dtype_size(e.dtype);
    std::vector<uint8_t> bytes(values.size() * es);
    for (std::size_t i = 0; i < values.size(); ++i)
      encode_element(values[i], e.dtype, bytes.data() + i * es, "save_torch_checkpoint", e.name,
                     static_cast<int64_t>(i));
    const Shape& shape = e.tensor.shape();
    std::vector<int64_t> size(shape.begin(), shape.end()), stride(shape.size());
    int64_t step = 1;
    for (std::size_t d = shape.size(); d-- > 0;) {
      stride[d] = step;
      step *= shape[d];
    }
    pk.str(e.name);
    pk.global("torch._utils", "_rebuild_tensor_v2");
    pk.op(MARK);
    pk.op(MARK);  // the persistent id of the storage
    pk.str("storage");
    pk.global("torch", storage_class(e.dtype));
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
  pk.op(SETITEMS);
  pk.op(STOP);

  static const std::vector<uint8_t> kVersion = {'3', '\n'};
  static const std::vector<uint8_t> kByteOrder = {'l', 'i', 't', 't', 'l', 'e'};
  // torch.save's order: data.pkl first (its reader names the folder after the first entry).
  std::vector<std::pair<std::string, const std::vector<uint8_t>*>> entries;
  entries.emplace_back("archive/data.pkl", &pk.out);
  entries.emplace_back("archive/byteorder", &kByteOrder);
  for (std::size_t k = 0; k < storages.size(); ++k)
    entries.emplace_back("archive/data/" + std::to_string(k), &storages[k]);
  entries.emplace_back("archive/version", &kVersion);
  return write_zip(entries);
#endif
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
