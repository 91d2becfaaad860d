// The restricted unpickler (core/pickle.h) against Python's own pickles: numpy arrays and
// scalars written by Python 3 + numpy 1.24 at protocols 2, 4 and 5 (tests/data/pickle, from
// tests/interop/make_pickle_fixtures.py), and its refusal of malformed input: every truncation
// and many corruptions of a real pickle throw std::runtime_error and never crash (ASan runs
// this too).
#include <catch2/catch.hpp>

#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gantry/core/pickle.h"

using namespace gantry::pickle;
using Catch::Matchers::Contains;
using Kind = Value::Kind;

namespace {

std::vector<uint8_t> fixture(const std::string& name) {
  std::ifstream f(std::string(GANTRY_TEST_DATA) + "/pickle/" + name, std::ios::binary);
  REQUIRE(f.good());
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

std::vector<double> elements(const Value& a) {
  std::vector<double> v;
  for (int64_t k = 0; k < a.numel(); ++k) v.push_back(a.element(k));
  return v;
}

const Value& entry(const Value& root, const std::string& key) {
  const Value* v = root.find(key);
  INFO("key " << key);
  REQUIRE(v != nullptr);
  return *v;
}

// A string literal's bytes, NULs included.
template <std::size_t N>
std::string raw(const char (&s)[N]) {
  return std::string(s, N - 1);
}

void parse_bytes(const std::string& bytes) {
  Unpickler u(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test.pkl");
  u.run();
}
template <std::size_t N>
void parse_bytes(const char (&s)[N]) {
  parse_bytes(raw(s));
}

}  // namespace

TEST_CASE("pickle: numpy arrays and scalars as Python 3 + numpy pickle them, protocols 2, 4, 5") {
  for (const char* file : {"numpy_p2.pkl", "numpy_p4.pkl", "numpy_p5.pkl"}) {
    INFO(file);
    const std::vector<uint8_t> bytes = fixture(file);
    Unpickler u(bytes.data(), bytes.size(), file);
    const Value& root = *u.run();
    REQUIRE(root.kind == Kind::Dict);

    const Value& u8 = entry(root, "u8");
    REQUIRE(u8.kind == Kind::Array);
    CHECK(u8.items[0]->s == "u1");
    CHECK(u8.shape == std::vector<int64_t>{2, 3});
    CHECK(elements(u8) == std::vector<double>{0, 1, 2, 3, 4, 5});

    CHECK(elements(entry(root, "f32")) == std::vector<double>{0.5, -1.25, 3.0});
    const Value& big = entry(root, "f64_big_endian");
    CHECK(big.shape == std::vector<int64_t>{2, 2});
    CHECK(elements(big) == std::vector<double>{1.5, -2.0, 0.25, 8.0});
    const Value& fortran = entry(root, "i64_fortran");
    CHECK(fortran.i == 1);  // Fortran order: the data runs down the columns
    CHECK(fortran.shape == std::vector<int64_t>{2, 3});
    CHECK(elements(fortran) == std::vector<double>{-2, 1, -1, 2, 0, 3});
    CHECK(elements(entry(root, "i16")) == std::vector<double>{-300, 7});
    CHECK(elements(entry(root, "f16")) == std::vector<double>{0.5, -65504.0});
    CHECK(elements(entry(root, "bool")) == std::vector<double>{1, 0, 1});
    const Value& empty = entry(root, "empty");
    CHECK(empty.shape == std::vector<int64_t>{0, 4});
    CHECK(empty.numel() == 0);

    const Value& sf = entry(root, "scalar_f64");
    REQUIRE(sf.kind == Kind::Array);
    CHECK(sf.shape.empty());
    CHECK(sf.element(0) == 0.25);
    CHECK(entry(root, "scalar_i64").element(0) == -7);

    // Dtypes gantry does not read stay opaque objects, named.
    CHECK(entry(root, "strings").kind == Kind::Object);
    CHECK(type_name(entry(root, "strings")) == "object of class numpy.ndarray");
    CHECK(entry(root, "objects").kind == Kind::Object);
    CHECK(entry(root, "records").kind == Kind::Object);  // a structured dtype

    const Value& plain = entry(root, "plain");
    CHECK(entry(plain, "epoch").i == 3);
    CHECK(entry(plain, "name").s == "x");
    const Value& data = entry(plain, "data");  // protocol 2: _codecs.encode('\x00\xff', 'latin1')
    CHECK(data.kind == Kind::Bytes);
    CHECK(data.s == std::string("\x00\xff", 2));
    const Value& names = entry(root, "names");
    REQUIRE(names.kind == Kind::List);
    REQUIRE(names.items.size() == 300);
    CHECK(names.items[299]->s == "n299");
  }
}

TEST_CASE("pickle: element() refuses what is not an element of a numeric array") {
  const std::vector<uint8_t> bytes = fixture("numpy_p4.pkl");
  Unpickler u(bytes.data(), bytes.size(), "numpy_p4.pkl");
  const Value& root = *u.run();
  CHECK_THROWS_AS(entry(root, "u8").element(6), std::out_of_range);
  CHECK_THROWS_AS(entry(root, "plain").element(0), std::out_of_range);
}

TEST_CASE("pickle: malformed pickles are errors that name the byte and the problem") {
  // A numpy array whose data is one byte short: 2 x u1 needs 2 bytes.
  const std::string short_array = raw(
      "\x80\x02" "cnumpy.core.multiarray\n_reconstruct\n" "cnumpy\nndarray\n" "K\x00\x85" "U\x01" "b"
      "\x87R" "(K\x01K\x02\x85" "cnumpy\ndtype\n" "U\x02u1K\x00K\x01\x87R" "(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
      "\x89U\x01\x07tb.");
  CHECK_THROWS_WITH(parse_bytes(short_array), Contains("test.pkl at byte") && Contains("holds 1 bytes, not 2"));
  // The same with 2 bytes parses.
  std::string ok = short_array;
  ok.replace(ok.find("U\x01\x07tb."), 6, std::string("U\x02\x07\x08tb.", 7));
  Unpickler u(reinterpret_cast<const uint8_t*>(ok.data()), ok.size(), "ok.pkl");
  const Value& arr = *u.run();
  REQUIRE(arr.kind == Kind::Array);
  CHECK(elements(arr) == std::vector<double>{7, 8});

  CHECK_THROWS_WITH(parse_bytes("(I1\n."), Contains("protocol 0/1's text opcodes") && Contains("protocol 2 or later"));
  CHECK_THROWS_WITH(parse_bytes("\x80\x05\x97."), Contains("out-of-band buffer"));
  CHECK_THROWS_WITH(parse_bytes("\x80\x02K\x01Q."), Contains("persistent id"));
  CHECK_THROWS_WITH(parse_bytes("\x80\x02K\x01K\x02."), Contains("STOP with 2 values"));
  CHECK_THROWS_WITH(parse_bytes("\x80\x02X\x05\x00\x00\x00ab."), Contains("runs past the end"));
  CHECK_THROWS_WITH(parse_bytes("\x80\x02h\x07."), Contains("memo entry 7 was never stored"));
  // bytes from text that is not latin-1 (U+0100 in UTF-8 is c4 80).
  CHECK_THROWS_WITH(parse_bytes("\x80\x02" "c_codecs\nencode\n" "X\x02\x00\x00\x00\xc4\x80" "X\x06\x00\x00\x00latin1" "\x86R."),
                    Contains("not latin-1"));
}

TEST_CASE("pickle: every truncation and many corruptions of a real pickle are errors, never crashes") {
  for (const char* file : {"numpy_p2.pkl", "numpy_p5.pkl"}) {
    const std::vector<uint8_t> bytes = fixture(file);
    int threw = 0;
    for (std::size_t n = 0; n < bytes.size(); ++n) {
      Unpickler u(bytes.data(), n, file);
      try {
        u.run();
      } catch (const std::runtime_error&) {
        ++threw;
      }
    }
    CHECK(threw == static_cast<int>(bytes.size()));  // a prefix never ends in STOP
    std::mt19937 rng(7);
    for (int trial = 0; trial < 3000; ++trial) {
      std::vector<uint8_t> b = bytes;
      for (int flips = 0; flips < 3; ++flips) b[rng() % b.size()] = static_cast<uint8_t>(rng());
      Unpickler u(b.data(), b.size(), file);
      try {
        const Value* root = u.run();
        CHECK(root != nullptr);
      } catch (const std::runtime_error&) {
      }
    }
  }
}
