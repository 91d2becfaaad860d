// The restricted unpickler: see pickle.h for what it reads and what it refuses.
#include "gantry/core/pickle.h"

#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

#include "gantry/core/safetensors.h"  // decode_element, for float16

namespace gantry::pickle {

namespace {

const char* kind_text(Value::Kind k) {
  switch (k) {
    case Value::Kind::None: return "None";
    case Value::Kind::Bool: return "bool";
    case Value::Kind::Int: return "int";
    case Value::Kind::Float: return "float";
    case Value::Kind::Str: return "str";
    case Value::Kind::Bytes: return "bytes";
    case Value::Kind::Tuple: return "tuple";
    case Value::Kind::List: return "list";
    case Value::Kind::Dict: return "dict";
    case Value::Kind::Global: return "global";
    case Value::Kind::Object: return "object";
    case Value::Kind::Array: return "numpy array";
    case Value::Kind::DType: return "numpy dtype";
    case Value::Kind::Extension: return "extension";
  }
  return "?";
}

// numpy moved numpy.core to numpy._core in 2.0; pickles name either.
bool numpy_global(const std::string& g, const std::string& module_tail, const std::string& name) {
  return g == "numpy.core." + module_tail + "." + name || g == "numpy._core." + module_tail + "." + name;
}

// UTF-8 text whose code points are all < 256 -> those code points as bytes (what
// `_codecs.encode(text, 'latin1')` computes).
bool utf8_to_latin1(const std::string& in, std::string* out) {
  out->clear();
  out->reserve(in.size());
  for (std::size_t k = 0; k < in.size(); ++k) {
    const auto c = static_cast<unsigned char>(in[k]);
    if (c < 0x80) {
      out->push_back(static_cast<char>(c));
    } else if ((c == 0xc2 || c == 0xc3) && k + 1 < in.size() &&
               (static_cast<unsigned char>(in[k + 1]) & 0xc0) == 0x80) {
      out->push_back(static_cast<char>(((c & 0x03) << 6) | (static_cast<unsigned char>(in[k + 1]) & 0x3f)));
      ++k;
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace

const Value* Value::find(const std::string& key) const {
  if (kind != Kind::Dict) return nullptr;
  for (std::size_t k = 0; k + 1 < items.size(); k += 2)
    if (items[k]->is_text() && items[k]->s == key) return items[k + 1];
  return nullptr;
}

int64_t Value::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

double Value::element(int64_t k) const {
  if (kind != Kind::Array || items.empty() || k < 0 || k >= numel())
    throw std::out_of_range("pickle::Value::element: not an element of a numeric array");
  const std::string& code = items[0]->s;  // an Array's dtype
  const std::size_t es = numpy_item_size(code);
  uint8_t b[8];
  std::memcpy(b, s.data() + static_cast<std::size_t>(k) * es, es);
  if (s2 == ">")
    for (std::size_t lo = 0, hi = es - 1; lo < hi; ++lo, --hi) std::swap(b[lo], b[hi]);
  uint64_t u = 0;
  for (std::size_t j = es; j-- > 0;) u = u << 8 | b[j];
  switch (code[0]) {
    case 'b': return u != 0;
    case 'u': return static_cast<double>(u);
    case 'i': {
      if (es < 8 && (u >> (8 * es - 1)) & 1) u |= ~uint64_t{0} << (8 * es);  // sign-extend
      int64_t v;
      std::memcpy(&v, &u, 8);
      return static_cast<double>(v);
    }
    default:  // 'f'
      if (es == 2) return decode_element(b, DType::F16);
      if (es == 4) {
        float v;
        std::memcpy(&v, b, 4);
        return v;
      }
      double v;
      std::memcpy(&v, b, 8);
      return v;
  }
}

std::string type_name(const Value& v) {
  if (v.kind == Value::Kind::Object) return "object of class " + v.s + "." + v.s2;
  if (v.kind == Value::Kind::Extension) return v.s;
  return kind_text(v.kind);
}

std::size_t numpy_item_size(const std::string& code) {
  static const char* const kCodes[] = {"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"};
  for (const char* c : kCodes)
    if (code == c) return static_cast<std::size_t>(c[1] - '0');
  return 0;
}

Value* Hooks::persistent_load(Unpickler& u, std::size_t at, Value*) {
  u.bad(at, "a persistent id (BINPERSID), which only a format's own reader gives meaning to");
}

Value* Hooks::reduce(Unpickler&, std::size_t, const std::string&, Value*, int) { return nullptr; }

Unpickler::Unpickler(const uint8_t* data, std::size_t size, std::string what, Hooks* hooks)
    : p_(data), size_(size), what_(std::move(what)), hooks_(hooks ? hooks : &default_hooks_) {}

Value* Unpickler::run() {
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
      case NONE: stack_.push_back(make(Value::Kind::None)); break;
      case NEWTRUE: case NEWFALSE: {
        auto v = make(Value::Kind::Bool);
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
        auto v = make(Value::Kind::Float);
        std::memcpy(&v->f, &bits, 8);
        stack_.push_back(v);
        break;
      }
      // Python 2's str (BINSTRING) is bytes, but names and keys: kept as Str, bytes and all.
      case BINUNICODE: case BINSTRING: push_text(Value::Kind::Str, le(4)); break;
      case SHORT_BINUNICODE: case SHORT_BINSTRING: push_text(Value::Kind::Str, byte()); break;
      case BINUNICODE8: push_text(Value::Kind::Str, le(8)); break;
      case BINBYTES: push_text(Value::Kind::Bytes, le(4)); break;
      case SHORT_BINBYTES: push_text(Value::Kind::Bytes, byte()); break;
      case BINBYTES8: case BYTEARRAY8: push_text(Value::Kind::Bytes, le(8)); break;
      case NEXT_BUFFER: case READONLY_BUFFER:
        bad(at, "an out-of-band buffer (pickle protocol 5 with buffer_callback): pickle it in-band");
      case EMPTY_TUPLE: stack_.push_back(make(Value::Kind::Tuple)); break;
      case TUPLE: case FROZENSET: {
        auto t = make(op == TUPLE ? Value::Kind::Tuple : Value::Kind::List);
        t->items = take_to_mark(at);
        stack_.push_back(t);
        break;
      }
      case TUPLE1: case TUPLE2: case TUPLE3: {
        const std::size_t n = op - TUPLE1 + 1;
        if (stack_.size() < n + base()) bad(at, "TUPLE" + std::to_string(n) + " on a short stack");
        auto t = make(Value::Kind::Tuple);
        t->items.assign(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
        stack_.resize(stack_.size() - n);
        stack_.push_back(t);
        break;
      }
      case EMPTY_LIST: case EMPTY_SET: stack_.push_back(make(Value::Kind::List)); break;
      case APPEND: {
        Value* v = pop(at);
        Value* l = top(at);
        if (l->kind != Value::Kind::List) bad(at, "APPEND to a " + type_name(*l));
        l->items.push_back(v);
        break;
      }
      case APPENDS: case ADDITEMS: {
        std::vector<Value*> vs = take_to_mark(at);
        Value* l = top(at);
        if (l->kind == Value::Kind::Object) break;  // a custom class's items: not read
        if (l->kind != Value::Kind::List) bad(at, "APPENDS to a " + type_name(*l));
        l->items.insert(l->items.end(), vs.begin(), vs.end());
        break;
      }
      case EMPTY_DICT: stack_.push_back(make(Value::Kind::Dict)); break;
      case SETITEM: {
        Value* v = pop(at);
        Value* k = pop(at);
        set_items(at, top(at), {k, v});
        break;
      }
      case SETITEMS: {
        std::vector<Value*> kv = take_to_mark(at);
        if (kv.size() % 2) bad(at, "SETITEMS with an odd number of values");
        set_items(at, top(at), kv);
        break;
      }
      case GLOBAL: {
        auto g = make(Value::Kind::Global);
        g->s = line(at);
        g->s2 = line(at);
        stack_.push_back(g);
        break;
      }
      case STACK_GLOBAL: {
        Value* n = pop(at);
        Value* m = pop(at);
        if (m->kind != Value::Kind::Str || n->kind != Value::Kind::Str) bad(at, "STACK_GLOBAL of non-strings");
        auto g = make(Value::Kind::Global);
        g->s = m->s;
        g->s2 = n->s;
        stack_.push_back(g);
        break;
      }
      case REDUCE: {
        Value* args = pop(at);
        Value* fn = pop(at);
        stack_.push_back(reduce(at, fn, args, 0));
        break;
      }
      case NEWOBJ: case NEWOBJ_EX: {
        if (op == NEWOBJ_EX) pop(at);  // kwargs
        pop(at);                       // args
        Value* cls = pop(at);
        stack_.push_back(object_of(cls));
        break;
      }
      case BUILD: {
        Value* state = pop(at);
        build(at, top(at), state);
        break;
      }
      case BINPERSID: {
        Value* pid = pop(at);
        stack_.push_back(hooks_->persistent_load(*this, at, pid));
        break;
      }
      case BINPUT: memo_[byte()] = top(at); break;
      case LONG_BINPUT: memo_[le(4)] = top(at); break;
      case MEMOIZE: memo_[memo_.size()] = top(at); break;
      case BINGET: get(at, byte()); break;
      case LONG_BINGET: get(at, le(4)); break;
      default: {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        const bool text = op == 'I' || op == 'L' || op == 'F' || op == 'S' || op == 'V' || op == 'p' ||
                          op == 'g' || op == 'l' || op == 'd' || op == 'i' || op == 'o' || op == 'P';
        bad(at, std::string("pickle opcode ") + hex +
                    (text ? " is one of protocol 0/1's text opcodes, which gantry does not read: "
                            "pickle it again with protocol 2 or later"
                          : " is not one gantry reads (a pickle gantry cannot read)"));
      }
    }
  }
}

Value* Unpickler::make(Value::Kind k) {
  arena_.push_back(std::make_unique<Value>());
  arena_.back()->kind = k;
  return arena_.back().get();
}

void Unpickler::bad(std::size_t at, const std::string& problem) const {
  throw std::runtime_error(what_ + " at byte " + std::to_string(at) + ": " + problem);
}

uint8_t Unpickler::byte() {
  if (pos_ >= size_) bad(pos_, "the pickle ends without STOP (truncated?)");
  return p_[pos_++];
}

const uint8_t* Unpickler::bytes(uint64_t n) {
  if (n > size_ - pos_) bad(pos_, "a " + std::to_string(n) + "-byte field runs past the end of the pickle (truncated?)");
  const uint8_t* b = p_ + pos_;
  pos_ += static_cast<std::size_t>(n);
  return b;
}

uint64_t Unpickler::le(int n) {
  const uint8_t* b = bytes(static_cast<uint64_t>(n));
  uint64_t v = 0;
  for (int k = n - 1; k >= 0; --k) v = v << 8 | b[k];
  return v;
}

std::string Unpickler::line(std::size_t at) {
  const std::size_t start = pos_;
  while (pos_ < size_ && p_[pos_] != '\n') ++pos_;
  if (pos_ >= size_) bad(at, "GLOBAL without its newline (truncated?)");
  return std::string(reinterpret_cast<const char*>(p_) + start, pos_++ - start);
}

std::size_t Unpickler::base() const { return marks_.empty() ? 0 : marks_.back(); }

Value* Unpickler::pop(std::size_t at) {
  if (stack_.size() <= base()) bad(at, "pop from an empty stack (or past a MARK)");
  Value* v = stack_.back();
  stack_.pop_back();
  return v;
}

Value* Unpickler::top(std::size_t at) {
  if (stack_.size() <= base()) bad(at, "an opcode needs a value and the stack is empty");
  return stack_.back();
}

std::vector<Value*> Unpickler::take_to_mark(std::size_t at) {
  if (marks_.empty()) bad(at, "no MARK to take values back to");
  const std::size_t m = marks_.back();
  marks_.pop_back();
  std::vector<Value*> vs(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
  stack_.resize(m);
  return vs;
}

void Unpickler::get(std::size_t at, uint64_t key) {
  auto it = memo_.find(key);
  if (it == memo_.end()) bad(at, "memo entry " + std::to_string(key) + " was never stored");
  stack_.push_back(it->second);
}

void Unpickler::push_int(int64_t v) {
  auto p = make(Value::Kind::Int);
  p->i = v;
  stack_.push_back(p);
}

void Unpickler::push_long(std::size_t at, uint64_t n) {
  if (n > 8) bad(at, "an integer of " + std::to_string(n) + " bytes (gantry reads up to 64-bit integers)");
  const uint8_t* b = bytes(n);
  uint64_t v = 0;
  for (uint64_t k = n; k-- > 0;) v = v << 8 | b[k];
  if (n > 0 && n < 8 && (b[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign-extend
  int64_t s;
  std::memcpy(&s, &v, 8);
  push_int(s);
}

void Unpickler::push_text(Value::Kind k, uint64_t n) {
  const uint8_t* b = bytes(n);
  auto p = make(k);
  p->s.assign(reinterpret_cast<const char*>(b), static_cast<std::size_t>(n));
  stack_.push_back(p);
}

void Unpickler::set_items(std::size_t at, Value* d, const std::vector<Value*>& kv) {
  if (d->kind == Value::Kind::Object) return;  // a custom class's items: not read
  if (d->kind != Value::Kind::Dict) bad(at, "SETITEM(S) on a " + type_name(*d));
  d->items.insert(d->items.end(), kv.begin(), kv.end());
}

Value* Unpickler::object_of(Value* cls) {
  auto o = make(Value::Kind::Object);
  if (cls->kind == Value::Kind::Global) {
    o->s = cls->s;
    o->s2 = cls->s2;
  } else {
    o->s = "?";
    o->s2 = kind_text(cls->kind);
  }
  return o;
}

Value* Unpickler::reduce(std::size_t at, Value* fn, Value* args, int depth) {
  if (fn->kind != Value::Kind::Global) bad(at, "REDUCE of a " + type_name(*fn));
  if (args->kind != Value::Kind::Tuple) bad(at, "REDUCE with arguments that are not a tuple");
  const std::string g = fn->s + "." + fn->s2;
  if (Value* v = hooks_->reduce(*this, at, g, args, depth)) return v;
  const auto& a = args->items;
  if (g == "collections.OrderedDict") {
    if (!a.empty()) bad(at, "OrderedDict(...) with arguments (gantry reads an empty one filled by SETITEMS)");
    return make(Value::Kind::Dict);
  }
  if (g == "_codecs.encode") {  // Python 3 bytes at protocol 2: encode(text, 'latin1')
    if (a.size() != 2 || a[0]->kind != Value::Kind::Str || !a[1]->is_text() ||
        (a[1]->s != "latin1" && a[1]->s != "latin-1"))
      return object_of(fn);
    auto b = make(Value::Kind::Bytes);
    if (!utf8_to_latin1(a[0]->s, &b->s)) bad(at, "_codecs.encode of text that is not latin-1");
    return b;
  }
  if (g == "__builtin__.bytes" || g == "builtins.bytes" || g == "builtins.bytearray" ||
      g == "__builtin__.bytearray") {  // bytes(), bytearray(b'...')
    if (a.empty()) return make(Value::Kind::Bytes);
    if (a.size() == 1 && a[0]->is_text()) {
      auto b = make(Value::Kind::Bytes);
      b->s = a[0]->s;
      return b;
    }
    return object_of(fn);
  }
  if (g == "builtins.set" || g == "builtins.frozenset" || g == "__builtin__.set" ||
      g == "__builtin__.frozenset") {
    auto l = make(Value::Kind::List);
    if (!a.empty() && (a[0]->kind == Value::Kind::List || a[0]->kind == Value::Kind::Tuple)) l->items = a[0]->items;
    return l;
  }
  if (g == "numpy.dtype") {  // dtype('f4', False, True); BUILD then gives its byte order
    if (a.empty() || !a[0]->is_text()) bad(at, "numpy.dtype(...) without a type code");
    auto d = make(Value::Kind::DType);
    std::string code = a[0]->s;
    if (!code.empty() && (code[0] == '<' || code[0] == '>' || code[0] == '|' || code[0] == '=')) {
      d->s2 = code.substr(0, 1);
      code = code.substr(1);
    } else {
      d->s2 = "=";
    }
    d->s = code;
    return d;
  }
  if (numpy_global(g, "multiarray", "_reconstruct")) {  // an empty ndarray that BUILD fills
    auto arr = make(Value::Kind::Object);  // an Array once BUILD gives it a dtype gantry reads
    arr->s = "numpy";
    arr->s2 = "ndarray";
    arr->i = -1;  // not built yet
    return arr;
  }
  if (numpy_global(g, "numeric", "_frombuffer")) {  // protocol 5: (buffer, dtype, shape, order)
    if (a.size() != 4 || a[3]->kind != Value::Kind::Str) bad(at, g + " with malformed arguments");
    return numpy_array(at, a[1], a[2], a[0], a[3]->s == "F");
  }
  if (numpy_global(g, "multiarray", "scalar")) {  // a numpy scalar: (dtype, its bytes)
    if (a.size() != 2) bad(at, g + " with malformed arguments");
    auto shape = make(Value::Kind::Tuple);
    return numpy_array(at, a[0], shape, a[1], false);
  }
  (void)depth;
  return object_of(fn);  // any other call: an object we do not open
}

// An Array from its parts, checked; an opaque numpy object when the dtype is one gantry does not
// read (strings, objects, records) or the data is not raw bytes (an object array's list).
Value* Unpickler::numpy_array(std::size_t at, Value* dtype, Value* shape, Value* data, bool fortran) {
  auto opaque = [&] {
    auto o = make(Value::Kind::Object);
    o->s = "numpy";
    o->s2 = "ndarray";
    return o;
  };
  if (dtype->kind != Value::Kind::DType) bad(at, "a numpy array whose dtype is a " + type_name(*dtype));
  if (shape->kind != Value::Kind::Tuple) bad(at, "a numpy array whose shape is not a tuple");
  const std::size_t es = numpy_item_size(dtype->s);
  if (es == 0 || !data->is_text()) return opaque();
  auto arr = make(Value::Kind::Array);
  const uint64_t cap = uint64_t{1} << 40;
  uint64_t n = 1;
  for (const Value* d : shape->items) {
    if (d->kind != Value::Kind::Int || d->i < 0) bad(at, "a numpy array with a bad shape");
    if (d->i != 0 && n > cap / static_cast<uint64_t>(d->i)) bad(at, "a numpy array of more than 2^40 elements");
    n *= static_cast<uint64_t>(d->i);
    arr->shape.push_back(d->i);
  }
  if (n * es != data->s.size())
    bad(at, "a numpy array of shape " + std::to_string(n) + " x " + dtype->s + " holds " +
                std::to_string(data->s.size()) + " bytes, not " + std::to_string(n * es) + " (corrupt?)");
  arr->items = {dtype};
  arr->s = data->s;
  arr->s2 = es == 1 ? "|" : dtype->s2 == ">" ? ">" : "<";  // '=' is native: little-endian here
  arr->i = fortran ? 1 : 0;
  return arr;
}

void Unpickler::build(std::size_t at, Value* target, Value* state) {
  if (target->kind == Value::Kind::DType) {
    // (version, byteorder, subarray, names, fields, elsize, alignment, flags)
    if (state->kind == Value::Kind::Tuple && state->items.size() >= 2 && state->items[1]->is_text())
      target->s2 = state->items[1]->s;
    // A sub-array (index 2) or record (3: field names) dtype: not one gantry reads.
    for (std::size_t k : {std::size_t{2}, std::size_t{3}})
      if (state->kind == Value::Kind::Tuple && state->items.size() > k && state->items[k]->kind != Value::Kind::None)
        target->s = "V";
    return;
  }
  if (target->kind == Value::Kind::Object && target->s == "numpy" && target->s2 == "ndarray" && target->i == -1) {
    // (version, shape, dtype, is_fortran, data)
    const auto& t = state->items;
    if (state->kind != Value::Kind::Tuple || t.size() != 5)
      bad(at, "a numpy array's state is not (version, shape, dtype, fortran, data)");
    Value* built = numpy_array(at, t[2], t[1], t[4], t[3]->kind != Value::Kind::None && t[3]->i != 0);
    *target = std::move(*built);  // the memo and the stack already point at `target`
    if (target->kind == Value::Kind::Object) target->i = 0;
    return;
  }
  // Any other object's state (an OrderedDict's _metadata, a module's __dict__): not needed,
  // so dropped.
}

}  // namespace gantry::pickle
