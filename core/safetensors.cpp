// safetensors reader and writer. See safetensors.h for the format and the contract.
#include "gantry/core/safetensors.h"

#include "gantry/core/file_bytes.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>

namespace gantry {

namespace {

using json = nlohmann::ordered_json;

// A header bigger than this is not a checkpoint but an attack or a corrupt length field; the
// reference implementation uses the same limit.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// {"name": {"shape": [..]}} nests three deep; anything deeper is rejected before the JSON
// parser sees it, so a hostile header cannot make it recurse or allocate without bound.
constexpr int kMaxJsonDepth = 4;

struct DTypeInfo {
  DType type;
  const char* name;
  std::size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::F64, "F64", 8}, {DType::F32, "F32", 4}, {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
    {DType::I16, "I16", 2}, {DType::I8, "I8", 1},   {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},
};

const DTypeInfo& info(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d;
  throw std::invalid_argument("safetensors: invalid DType value " +
                              std::to_string(static_cast<int>(t)));
}

// ---- little-endian loads and stores (the format is little-endian whatever the host is) ----
template <class T>
T load_le(const uint8_t* p) {
  uint8_t b[sizeof(T)];
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  for (std::size_t i = 0; i < sizeof(T); ++i) b[i] = p[sizeof(T) - 1 - i];
#else
  std::memcpy(b, p, sizeof(T));
#endif
  T v;
  std::memcpy(&v, b, sizeof(T));
  return v;
}

template <class T>
void store_le(uint8_t* p, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  for (std::size_t i = 0; i < sizeof(T); ++i) p[i] = b[sizeof(T) - 1 - i];
#else
  std::memcpy(p, b, sizeof(T));
#endif
}

// ---- half-precision conversions -----------------------------------------------------------
float half_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t man = h & 0x3ffu;
  float f;
  if (exp == 0) {  // zero or subnormal: man * 2^-24
    f = std::ldexp(static_cast<float>(man), -24);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    bits |= sign;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  uint32_t bits = exp == 31 ? (sign | 0x7f800000u | (man << 13))              // inf / NaN
                            : (sign | ((exp + 112) << 23) | (man << 13));  // 127 - 15 = 112
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, as every IEEE conversion does.
uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u)  // inf or NaN (keep NaN quiet and non-zero)
    return sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u);
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds past 65504: infinity
  if (abs < 0x38800000u) {                        // below 2^-14: subnormal half or zero
    // value = abs_float; half subnormal unit is 2^-24.
    float a;
    std::memcpy(&a, &abs, 4);
    const float scaled = a * 16777216.0f;  // exact (power of two scaling)
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));  // default mode: to even
  }
  // Normal: re-bias the exponent, round the 13 dropped mantissa bits to nearest even.
  uint32_t h = ((abs >> 13) - (112u << 10));
  const uint32_t rest = abs & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return sign | static_cast<uint16_t>(h);
}

float bf16_to_float(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // NaN
  x += 0x7fffu + ((x >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(x >> 16);
}

[[noreturn]] void fail(const std::string& name, const std::string& problem) {
  throw std::runtime_error("safetensors '" + name + "': " + problem);
}

// Rejects JSON nested deeper than kMaxJsonDepth (brackets inside strings do not count).
void check_json_depth(const char* p, std::size_t n, const std::string& name) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < n; ++i) {
    const char c = p[i];
    if (in_string) {
      if (c == '\\') ++i;  // skip the escaped character
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxJsonDepth)
        fail(name, "header JSON is nested deeper than " + std::to_string(kMaxJsonDepth) +
                       " levels (at byte " + std::to_string(8 + i) +
                       "); a safetensors header is {name: {dtype, shape, data_offsets}}");
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
}

// A JSON value as a non-negative integer, or a failure naming `what`.
uint64_t as_index(const json& v, const std::string& name, const std::string& what) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  fail(name, what + " is " + v.dump() + "; it must be a non-negative integer");
}

struct RawEntry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
  std::size_t order;  // position in the header, for a stable sort
};

// Local so that error messages need nothing from tensor.cpp.
std::string list_str(const Shape& s) {
  std::string r = "[";
  for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

const char* dtype_name(DType t) { return info(t).name; }
std::size_t dtype_size(DType t) { return info(t).size; }

bool parse_dtype(const std::string& name, DType* out) {
  for (const auto& d : kDTypes) {
    if (name == d.name) {
      if (out) *out = d.type;
      return true;
    }
  }
  return false;
}

const NamedTensor* find_tensor(const StateDict& sd, const std::string& name) {
  for (const auto& e : sd)
    if (e.name == name) return &e;
  return nullptr;
}

StateDict sub_state_dict(const StateDict& sd, const std::string& prefix) {
  const std::string head = prefix + ".";
  StateDict out;
  std::set<std::string> tops;
  for (const auto& e : sd) {
    if (e.name.compare(0, head.size(), head) == 0 && e.name.size() > head.size())
      out.push_back({e.name.substr(head.size()), e.tensor, e.dtype});
    tops.insert(e.name.substr(0, e.name.find('.')));
  }
  if (out.empty()) {
    std::string names;
    for (const auto& t : tops) names += (names.empty() ? "" : ", ") + t;
    throw std::invalid_argument("no tensors under '" + prefix + "'; the top-level names are: " +
                                (names.empty() ? "(none)" : names));
  }
  return out;
}

// ---- writer ---------------------------------------------------------------------------------

void encode_element(float v, DType dtype, uint8_t* out, const char* who, const std::string& tensor,
                    int64_t index) {
  auto bad = [&](const char* why) {
    std::ostringstream os;
    os << who << ": tensor '" << tensor << "' element " << index << " = " << v
       << " cannot be stored as " << dtype_name(dtype) << " (" << why << ")";
    throw std::invalid_argument(os.str());
  };
  auto integral = [&](double lo, double hi) {
    if (!std::isfinite(v) || v != std::nearbyint(v)) bad("not an integer");
    if (v < lo || v > hi) bad("out of range");
  };
  switch (dtype) {
    case DType::F64: store_le<double>(out, static_cast<double>(v)); break;
    case DType::F32: store_le<float>(out, v); break;
    case DType::F16: {
      const uint16_t h = float_to_half(v);
      if (std::isfinite(v) && (h & 0x7c00u) == 0x7c00u) bad("beyond F16's range of +-65504");
      store_le<uint16_t>(out, h);
      break;
    }
    case DType::BF16: store_le<uint16_t>(out, float_to_bf16(v)); break;
    case DType::I64:
      // 2^63 is exactly representable in float; anything at or above it does not fit.
      integral(-9223372036854775808.0, 9223372036854774784.0);
      store_le<int64_t>(out, static_cast<int64_t>(v));
      break;
    case DType::I32:
      integral(-2147483648.0, 2147483520.0);  // the largest float below 2^31
      store_le<int32_t>(out, static_cast<int32_t>(v));
      break;
    case DType::I16:
      integral(-32768.0, 32767.0);
      store_le<int16_t>(out, static_cast<int16_t>(v));
      break;
    case DType::I8:
      integral(-128.0, 127.0);
      out[0] = static_cast<uint8_t>(static_cast<int8_t>(v));
      break;
    case DType::U8:
      integral(0.0, 255.0);
      out[0] = static_cast<uint8_t>(v);
      break;
    case DType::BOOL:
      if (v != 0.f && v != 1.f) bad("BOOL holds only 0 and 1");
      out[0] = static_cast<uint8_t>(v);
      break;
  }
}

float decode_element(const uint8_t* p, DType dtype) {
  switch (dtype) {
    case DType::F64: {
      // Out-of-range doubles become +-inf explicitly (the plain cast is undefined behaviour).
      const double d = load_le<double>(p);
      if (d > std::numeric_limits<float>::max()) return std::numeric_limits<float>::infinity();
      if (d < -std::numeric_limits<float>::max()) return -std::numeric_limits<float>::infinity();
      return static_cast<float>(d);
    }
    case DType::F32: return load_le<float>(p);
    case DType::F16: return half_to_float(load_le<uint16_t>(p));
    case DType::BF16: return bf16_to_float(load_le<uint16_t>(p));
    case DType::I64: return static_cast<float>(load_le<int64_t>(p));
    case DType::I32: return static_cast<float>(load_le<int32_t>(p));
    case DType::I16: return static_cast<float>(load_le<int16_t>(p));
    case DType::I8: return static_cast<float>(static_cast<int8_t>(p[0]));
    case DType::U8: return static_cast<float>(p[0]);
    case DType::BOOL: return p[0] ? 1.f : 0.f;
  }
  return 0.f;
}

std::vector<uint8_t> serialize_safetensors(const StateDict& tensors, const Metadata& metadata) {
  json header = json::object();
  if (!metadata.empty()) {
    json meta = json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& e : tensors) {
    if (e.name.empty()) throw std::invalid_argument("save_safetensors: a tensor has an empty name");
    if (e.name == "__metadata__")
      throw std::invalid_argument("save_safetensors: '__metadata__' is reserved, not a tensor name");
    if (!seen.insert(e.name).second)
      throw std::invalid_argument("save_safetensors: duplicate tensor name '" + e.name + "'");
    if (!e.tensor.defined())
      throw std::invalid_argument("save_safetensors: tensor '" + e.name + "' is undefined");
    const uint64_t nbytes = static_cast<uint64_t>(e.tensor.numel()) * dtype_size(e.dtype);
    json entry = json::object();
    entry["dtype"] = dtype_name(e.dtype);
    entry["shape"] = e.tensor.shape();
    entry["data_offsets"] = {offset, offset + nbytes};
    header[e.name] = entry;
    offset += nbytes;
  }
  std::string text = header.dump();
  // Pad with spaces so the data starts 8-byte aligned (the reference writer does the same).
  text.append((8 - text.size() % 8) % 8, ' ');

  std::vector<uint8_t> out(8 + text.size() + offset);
  store_le<uint64_t>(out.data(), text.size());
  std::memcpy(out.data() + 8, text.data(), text.size());
  uint8_t* p = out.data() + 8 + text.size();
  for (const auto& e : tensors) {
    const std::vector<float> values = e.tensor.to_vector();  // host copy from any device
    const std::size_t sz = dtype_size(e.dtype);
    for (std::size_t i = 0; i < values.size(); ++i, p += sz)
      encode_element(values[i], e.dtype, p, "save_safetensors", e.name, static_cast<int64_t>(i));
  }
  return out;
}

void save_safetensors(const std::string& path, const StateDict& tensors, const Metadata& metadata) {
  const std::vector<uint8_t> bytes = serialize_safetensors(tensors, metadata);
  write_file_atomic(path, bytes.data(), bytes.size(), "save_safetensors");
}

// ---- reader ---------------------------------------------------------------------------------

SafetensorsContents parse_safetensors(const uint8_t* data, std::size_t size,
                                      const std::string& name) {
  if (size < 8)
    fail(name, "file is " + std::to_string(size) +
                   " bytes, too short for the 8-byte header length (truncated?)");
  const uint64_t header_len = load_le<uint64_t>(data);
  if (header_len > kMaxHeaderBytes)
    fail(name, "header length " + std::to_string(header_len) + " bytes exceeds the limit of " +
                   std::to_string(kMaxHeaderBytes) + " (corrupt file, or not safetensors)");
  if (header_len > size - 8)
    fail(name, "header length " + std::to_string(header_len) + " bytes runs past the end of the " +
                   std::to_string(size) + "-byte file (truncated?)");
  if (header_len < 2) fail(name, "header length " + std::to_string(header_len) + " is too short for a JSON object");
  const char* text = reinterpret_cast<const char*>(data + 8);
  const uint64_t data_size = size - 8 - header_len;
  const uint8_t* payload = data + 8 + header_len;

  check_json_depth(text, header_len, name);
  json header;
  try {
    header = json::parse(text, text + header_len);
  } catch (const json::exception& e) {
    fail(name, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object())
    fail(name, std::string("header JSON is a ") + header.type_name() + ", not an object");

  SafetensorsContents out;
  std::vector<RawEntry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) fail(name, "__metadata__ is a " + std::string(v.type_name()) + ", not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail(name, "__metadata__ value of '" + m.key() + "' is a " + m.value().type_name() +
                         "; metadata values must be strings");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + key + "'";
    if (!v.is_object()) fail(name, where + " is a " + std::string(v.type_name()) + ", not an object");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!v.contains(field)) fail(name, where + " has no \"" + field + "\"");
    const json& jd = v["dtype"];
    if (!jd.is_string()) fail(name, where + " dtype is " + jd.dump() + ", not a string");
    RawEntry e;
    e.name = key;
    e.order = entries.size();
    if (!parse_dtype(jd.get<std::string>(), &e.dtype))
      fail(name, where + " has unknown dtype \"" + jd.get<std::string>() +
                     "\" (known: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
    const json& js = v["shape"];
    if (!js.is_array()) fail(name, where + " shape is " + js.dump() + ", not an array");
    if (js.size() > static_cast<std::size_t>(kMaxDims))
      fail(name, where + " has " + std::to_string(js.size()) + " dimensions; gantry tensors have at most " +
                     std::to_string(kMaxDims));
    // numel * itemsize, checked against overflow (any product beyond the data is wrong anyway).
    uint64_t nbytes = dtype_size(e.dtype);
    bool overflow = false, has_zero = false;
    int64_t dims_product = 1;
    for (std::size_t d = 0; d < js.size(); ++d) {
      const uint64_t n = as_index(js[d], name, where + " shape[" + std::to_string(d) + "]");
      if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail(name, where + " shape[" + std::to_string(d) + "] = " + std::to_string(n) + " is too large");
      e.shape.push_back(static_cast<int64_t>(n));
      if (n == 0) has_zero = true;
      if (__builtin_mul_overflow(nbytes, n, &nbytes)) overflow = true;
      // Even with a zero dimension, the other sizes must multiply within int64, or code that
      // computes strides or element counts from the shape would overflow.
      if (n != 0 && __builtin_mul_overflow(dims_product, static_cast<int64_t>(n), &dims_product))
        fail(name, where + " has sizes " + list_str(e.shape) +
                       " (and maybe more) whose product overflows a 64-bit element count");
    }
    if (has_zero) overflow = false, nbytes = 0;
    const json& jo = v["data_offsets"];
    if (!jo.is_array() || jo.size() != 2)
      fail(name, where + " data_offsets is " + jo.dump() + "; it must be [begin, end]");
    e.begin = as_index(jo[0], name, where + " data_offsets[0]");
    e.end = as_index(jo[1], name, where + " data_offsets[1]");
    if (e.end < e.begin)
      fail(name, where + " data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                     "] end before they begin");
    if (e.end > data_size)
      fail(name, where + " data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                     "] run past the end of the " + std::to_string(data_size) +
                     "-byte data section (truncated?)");
    if (overflow || nbytes != e.end - e.begin)
      fail(name, where + " has shape " + list_str(e.shape) + " of " + dtype_name(e.dtype) + ", i.e. " +
                     (overflow ? std::string("an overflowing number of") : std::to_string(nbytes)) +
                     " bytes, but data_offsets [" + std::to_string(e.begin) + ", " +
                     std::to_string(e.end) + "] hold " + std::to_string(e.end - e.begin) + " bytes");
    entries.push_back(std::move(e));
  }

  // The ranges must tile [0, data_size): no overlap, no gap, nothing after the last tensor.
  std::stable_sort(entries.begin(), entries.end(), [](const RawEntry& a, const RawEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  const RawEntry* prev = nullptr;
  for (const auto& e : entries) {
    if (e.begin < cursor)
      fail(name, "tensor '" + e.name + "' data_offsets [" + std::to_string(e.begin) + ", " +
                     std::to_string(e.end) + "] overlap tensor '" + prev->name + "' [" +
                     std::to_string(prev->begin) + ", " + std::to_string(prev->end) + "]");
    if (e.begin > cursor)
      fail(name, "bytes [" + std::to_string(cursor) + ", " + std::to_string(e.begin) +
                     ") of the data belong to no tensor (a gap before tensor '" + e.name +
                     "'); the ranges must be contiguous");
    cursor = e.end;
    prev = &e;
  }
  if (cursor != data_size)
    fail(name, "the data section is " + std::to_string(data_size) + " bytes but the tensors cover only " +
                   std::to_string(cursor) + " (trailing bytes after the last tensor)");

  // Everything is consistent: convert.
  out.tensors.reserve(entries.size());
  for (const auto& e : entries) {
    Tensor t = Tensor::empty(e.shape);
    float* dst = t.data();
    const std::size_t sz = dtype_size(e.dtype);
    const uint8_t* src = payload + e.begin;
    const int64_t n = t.numel();
    for (int64_t i = 0; i < n; ++i) dst[i] = decode_element(src + i * sz, e.dtype);
    out.tensors.push_back({e.name, t, e.dtype});
  }
  return out;
}

SafetensorsContents load_safetensors(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path, "safetensors");
  return parse_safetensors(bytes.data(), bytes.size(), path);
}

}  // namespace gantry
