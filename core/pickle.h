#pragma once
// Reading Python pickles without Python: a restricted unpickler for the data files PyTorch
// users have on disk — torch.save's data.pkl (core/torch_checkpoint.h), the CIFAR-10/100
// "python version" batches that torchvision downloads, and the numpy arrays inside them.
//
// Contract:
// - Unpickler::run() executes the pickle's opcodes on a stack machine and returns the object
//   they build. It imports nothing and runs nothing: a GLOBAL is only a name. REDUCE (a call)
//   of a name this reader does not know builds an opaque Object that records the name.
// - What it builds: None, bool, int (up to 64 bits), float, str, bytes, tuple, list, dict
//   (collections.OrderedDict too), set/frozenset (as a List) and numpy arrays (Array: dtype,
//   shape, raw bytes) from numpy 1.x and 2.x pickles: ndarray (`_reconstruct` + BUILD, and
//   protocol 5's `_frombuffer`) and numpy scalars (`scalar`). An array of a dtype gantry does
//   not read (strings, objects, records, complex) stays an opaque Object.
// - Python 2 pickles (cPickle; the CIFAR batches are these): their `str` values are bytes and
//   come back as Str holding those bytes. Python 3's protocol-2 bytes
//   (`_codecs.encode(text, 'latin1')`) come back as Bytes.
// - Opcodes: those of protocols 2 to 5 (the binary ones; Python's Lib/pickletools.py lists
//   them). Protocol 0/1's text opcodes and out-of-band buffers are errors that say so.
// - Hooks let a format give meaning to more: a persistent id (torch's storages) and calls to
//   the globals it knows (torch's tensor rebuild functions). Their values are Extension values
//   carrying the hook's own handle.
// - Values belong to the Unpickler (an arena; a pickle can build cycles through its memo):
//   pointers into them are valid while it lives.
// - Everything is checked: a malformed, truncated or inconsistent pickle throws
//   std::runtime_error "<what> at byte N: <problem>"; nothing crashes. Work and memory are
//   bounded by the input: each opcode runs once and makes at most two values (~150 bytes
//   each) besides the bytes it carries, so a hostile file of N bytes costs at most ~300 N.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace gantry::pickle {

// The pickle opcodes this reader (and torch_checkpoint's writer) uses.
enum Op : uint8_t {
  MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', DUP = '2', NONE = 'N', BININT = 'J',
  BININT1 = 'K', BININT2 = 'M', BINFLOAT = 'G', BINSTRING = 'T', SHORT_BINSTRING = 'U',
  BINUNICODE = 'X', BINBYTES = 'B', SHORT_BINBYTES = 'C', EMPTY_TUPLE = ')', TUPLE = 't',
  EMPTY_LIST = ']', APPEND = 'a', APPENDS = 'e', EMPTY_DICT = '}', SETITEM = 's',
  SETITEMS = 'u', GLOBAL = 'c', REDUCE = 'R', BUILD = 'b', BINPERSID = 'Q', BINPUT = 'q',
  LONG_BINPUT = 'r', BINGET = 'h', LONG_BINGET = 'j', PROTO = 0x80, NEWOBJ = 0x81,
  TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87, NEWTRUE = 0x88, NEWFALSE = 0x89, LONG1 = 0x8a,
  LONG4 = 0x8b, SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d, BINBYTES8 = 0x8e,
  EMPTY_SET = 0x8f, ADDITEMS = 0x90, FROZENSET = 0x91, NEWOBJ_EX = 0x92, STACK_GLOBAL = 0x93,
  MEMOIZE = 0x94, FRAME = 0x95, BYTEARRAY8 = 0x96, NEXT_BUFFER = 0x97, READONLY_BUFFER = 0x98,
};

struct Value {
  enum class Kind {
    None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Object, Array, DType, Extension
  };
  Kind kind = Kind::None;
  int64_t i = 0;             // Bool, Int; Array: 1 if Fortran-ordered; Extension: the hook's handle
  double f = 0;              // Float
  std::string s;             // Str, Bytes: the bytes; Global, Object: module; Array: raw data;
                             // DType: type code ("u1", "f4"); Extension: what it is, for messages
  std::string s2;            // Global, Object: name; Array, DType: byte order '<', '>', '|', '='
  std::vector<Value*> items; // Tuple, List; Dict: key, value, key, value, ...; Array: [dtype]
  std::vector<int64_t> shape;  // Array

  bool is_text() const { return kind == Kind::Str || kind == Kind::Bytes; }
  // Dict: the value under a str or bytes key `key` (Python 2 and 3 pickles spell keys either
  // way), or nullptr.
  const Value* find(const std::string& key) const;
  // Array: the element count (the product of the shape), and element k of the raw data (in
  // storage order) as a double.
  int64_t numel() const;
  double element(int64_t k) const;
};

// "int", "dict", "numpy array", ... for messages.
std::string type_name(const Value& v);
// A numpy type code's element size in bytes, or 0 for one gantry does not read. Read: b1, i1,
// u1, i2, u2, i4, u4, i8, u8, f2, f4, f8.
std::size_t numpy_item_size(const std::string& code);

class Unpickler;

// What a format adds to the reader (see torch_checkpoint.cpp).
class Hooks {
 public:
  virtual ~Hooks() = default;
  // BINPERSID: the object persistent id `pid` stands for. Default: an error.
  virtual Value* persistent_load(Unpickler& u, std::size_t at, Value* pid);
  // REDUCE of `global` ("module.name") with argument tuple `args`: the value, or nullptr when it
  // is not a global this format knows (the reader then handles it). `depth` bounds recursion.
  virtual Value* reduce(Unpickler& u, std::size_t at, const std::string& global, Value* args, int depth);
};

class Unpickler {
 public:
  // `what` prefixes every error message ("torch checkpoint 'x.pth': data.pkl"). The bytes must
  // outlive run().
  Unpickler(const uint8_t* data, std::size_t size, std::string what, Hooks* hooks = nullptr);

  // The object the pickle builds; it lives as long as this Unpickler.
  Value* run();

  // For hooks: a new value, an error at byte `at`, a call (to recurse through wrappers).
  Value* make(Value::Kind k);
  [[noreturn]] void bad(std::size_t at, const std::string& problem) const;
  Value* reduce(std::size_t at, Value* fn, Value* args, int depth);

 private:
  uint8_t byte();
  const uint8_t* bytes(uint64_t n);
  uint64_t le(int n);
  std::string line(std::size_t at);
  std::size_t base() const;
  Value* pop(std::size_t at);
  Value* top(std::size_t at);
  std::vector<Value*> take_to_mark(std::size_t at);
  void get(std::size_t at, uint64_t key);
  void push_int(int64_t v);
  void push_long(std::size_t at, uint64_t n);
  void push_text(Value::Kind k, uint64_t n);
  void set_items(std::size_t at, Value* d, const std::vector<Value*>& kv);
  Value* object_of(Value* cls);
  Value* numpy_array(std::size_t at, Value* dtype, Value* shape, Value* data, bool fortran);
  void build(std::size_t at, Value* target, Value* state);

  const uint8_t* p_;
  std::size_t size_;
  std::string what_;
  Hooks* hooks_;
  Hooks default_hooks_;
  std::size_t pos_ = 0;
  std::vector<std::unique_ptr<Value>> arena_;
  std::vector<Value*> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<uint64_t, Value*> memo_;
};

}  // namespace gantry::pickle
