// safetensors writer/reader: round trips of every dtype, atomic writes, and the reader's
// validation of malformed files (each error must name the file and the problem).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gantry/core/safetensors.h"

using namespace gantry;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir() {
  const char* env = std::getenv("GANTRY_TEST_TMP");
  fs::path p = fs::path(env ? env : fs::temp_directory_path().string()) / "safetensors";
  fs::create_directories(p);
  return p;
}

// A safetensors file from a literal JSON header and a data section.
std::vector<uint8_t> make_file(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(8);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

SafetensorsContents parse(const std::vector<uint8_t>& b, const std::string& name = "bad.safetensors") {
  return parse_safetensors(b.data(), b.size(), name);
}

std::vector<uint8_t> zeros(std::size_t n) { return std::vector<uint8_t>(n, 0); }

}  // namespace

TEST_CASE("safetensors: round trip of every dtype keeps values, shapes, order and dtypes") {
  StateDict sd = {
      {"f32", Tensor::from_vector({1.5f, -2.f, 3.25f, 1e-30f, -0.f, 3.4e38f}, {2, 3}), DType::F32},
      {"f64", Tensor::from_vector({0.1f, -7.f}, {2}), DType::F64},
      {"f16", Tensor::from_vector({1.f, -0.5f, 65504.f, 6.1035156e-05f, 5.9604645e-08f, 0.f}, {6}), DType::F16},
      {"bf16", Tensor::from_vector({1.f, -256.f, std::ldexp(1.f, 100)}, {3}), DType::BF16},
      {"i64", Tensor::full({}, 123456.f), DType::I64},
      {"i32", Tensor::from_vector({-5.f, 7.f}, {1, 2}), DType::I32},
      {"i16", Tensor::from_vector({-32768.f, 32767.f}, {2}), DType::I16},
      {"i8", Tensor::from_vector({-128.f, 127.f}, {2}), DType::I8},
      {"u8", Tensor::from_vector({0.f, 255.f, 17.f}, {3}), DType::U8},
      {"bool", Tensor::from_vector({0.f, 1.f, 1.f}, {3}), DType::BOOL},
      {"empty", Tensor::zeros({0, 4}), DType::F32},
  };
  const Metadata meta = {{"format", "pt"}, {"nz", "100"}};
  const auto bytes = serialize_safetensors(sd, meta);
  // The header is padded so that the data begins 8-byte aligned.
  uint64_t hl = 0;
  for (int i = 0; i < 8; ++i) hl |= uint64_t{bytes[i]} << (8 * i);
  CHECK(hl % 8 == 0);

  const auto c = parse(bytes, "mem");
  REQUIRE(c.tensors.size() == sd.size());
  for (std::size_t i = 0; i < sd.size(); ++i) {
    INFO(sd[i].name);
    CHECK(c.tensors[i].name == sd[i].name);
    CHECK(c.tensors[i].dtype == sd[i].dtype);
    CHECK(c.tensors[i].tensor.shape() == sd[i].tensor.shape());
    const auto want = sd[i].tensor.to_vector(), got = c.tensors[i].tensor.to_vector();
    REQUIRE(want.size() == got.size());
    // All chosen values are exact in their dtype (float -> double -> float is exact too).
    for (std::size_t j = 0; j < want.size(); ++j) CHECK(got[j] == want[j]);
  }
  CHECK(c.metadata == meta);
}

TEST_CASE("safetensors: F16/BF16 rounding is to nearest even") {
  // 1 + 2^-11 is halfway between two halves: rounds to 1 (even). 1 + 3*2^-11 rounds up.
  StateDict sd = {{"h", Tensor::from_vector({1.f + 1.f / 2048.f, 1.f + 3.f / 2048.f}, {2}), DType::F16},
                  {"b", Tensor::from_vector({1.f + 1.f / 256.f, 1.f + 3.f / 256.f}, {2}), DType::BF16}};
  const auto c = parse(serialize_safetensors(sd), "mem");
  CHECK(c.tensors[0].tensor.to_vector() == std::vector<float>{1.f, 1.f + 4.f / 2048.f});
  CHECK(c.tensors[1].tensor.to_vector() == std::vector<float>{1.f, 1.f + 4.f / 256.f});
}

TEST_CASE("safetensors: the writer refuses what the dtype cannot hold, and bad names") {
  CHECK_THROWS_WITH(serialize_safetensors({{"n", Tensor::full({}, 2.5f), DType::I64}}),
                    Contains("'n'") && Contains("I64") && Contains("not an integer"));
  CHECK_THROWS_WITH(serialize_safetensors({{"u", Tensor::full({1}, 256.f), DType::U8}}),
                    Contains("'u'") && Contains("out of range"));
  CHECK_THROWS_WITH(serialize_safetensors({{"h", Tensor::full({1}, 1e6f), DType::F16}}),
                    Contains("'h'") && Contains("F16"));
  CHECK_THROWS_WITH(serialize_safetensors({{"a", Tensor::zeros({1})}, {"a", Tensor::zeros({1})}}),
                    Contains("duplicate") && Contains("'a'"));
  CHECK_THROWS_WITH(serialize_safetensors({{"__metadata__", Tensor::zeros({1})}}), Contains("reserved"));
  CHECK_THROWS_WITH(serialize_safetensors({{"", Tensor::zeros({1})}}), Contains("empty name"));
}

TEST_CASE("safetensors: save is atomic and load names the file") {
  const fs::path dir = temp_dir();
  const std::string path = (dir / "model.safetensors").string();
  save_safetensors(path, {{"w", Tensor::from_vector({1.f, 2.f}, {2})}}, {{"k", "v"}});
  save_safetensors(path, {{"w", Tensor::from_vector({3.f, 4.f, 5.f}, {3})}});  // overwrite
  const auto c = load_safetensors(path);
  REQUIRE(c.tensors.size() == 1);
  CHECK(c.tensors[0].tensor.to_vector() == std::vector<float>{3.f, 4.f, 5.f});
  CHECK(c.metadata.empty());
  // No temporary left behind.
  for (const auto& e : fs::directory_iterator(dir))
    CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);

  // A truncated file on disk: the error names the path and says so.
  const auto size = fs::file_size(path);
  fs::resize_file(path, size - 3);
  CHECK_THROWS_WITH(load_safetensors(path), Contains(path) && Contains("truncated"));
  CHECK_THROWS_WITH(load_safetensors((dir / "missing.safetensors").string()),
                    Contains("missing.safetensors") && Contains("cannot open"));
  // Writing into a folder that does not exist fails with the path in the message.
  CHECK_THROWS_WITH(save_safetensors((dir / "no/such/dir/x.safetensors").string(), {}),
                    Contains("no/such/dir/x.safetensors"));
}

TEST_CASE("safetensors: every truncation of a valid file is an error naming the file") {
  const auto good = serialize_safetensors(
      {{"a", Tensor::from_vector({1.f, 2.f, 3.f}, {3})}, {"b", Tensor::full({}, 9.f), DType::I64}});
  REQUIRE_NOTHROW(parse(good));
  for (std::size_t n = 0; n < good.size(); ++n) {
    INFO("cut at " << n << " of " << good.size());
    CHECK_THROWS_WITH(parse_safetensors(good.data(), n, "cut.safetensors"), Contains("'cut.safetensors'"));
  }
  CHECK_THROWS_WITH(parse_safetensors(good.data(), 5, "t.st"), Contains("too short") && Contains("truncated"));
  CHECK_THROWS_WITH(parse_safetensors(good.data(), 20, "t.st"), Contains("runs past the end") && Contains("truncated"));
  CHECK_THROWS_WITH(parse_safetensors(good.data(), good.size() - 1, "t.st"),
                    Contains("'b'") && Contains("run past the end") && Contains("truncated"));
}

TEST_CASE("safetensors: malformed headers are errors that say what is wrong") {
  const std::string f = "'bad.safetensors'";
  SECTION("huge header length") {
    std::vector<uint8_t> b(16, 0xff);
    CHECK_THROWS_WITH(parse(b), Contains(f) && Contains("header length") && Contains("exceeds the limit"));
  }
  SECTION("bad JSON") {
    CHECK_THROWS_WITH(parse(make_file("{\"a\": {\"dtype\": ", {})), Contains(f) && Contains("not valid JSON"));
    CHECK_THROWS_WITH(parse(make_file("{\"a\": 1,}", {})), Contains(f) && Contains("not valid JSON"));
  }
  SECTION("header is not an object") {
    CHECK_THROWS_WITH(parse(make_file("[1, 2]  ", {})), Contains(f) && Contains("not an object"));
  }
  SECTION("deeply nested JSON is refused before parsing") {
    CHECK_THROWS_WITH(parse(make_file(std::string(100000, '[') + std::string(100000, ']'), {})),
                      Contains(f) && Contains("nested deeper"));
  }
  SECTION("unknown dtype") {
    CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}})", zeros(1))),
                      Contains(f) && Contains("'w'") && Contains("unknown dtype \"F8\""));
  }
  SECTION("missing field") {
    CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", zeros(4))),
                      Contains(f) && Contains("'w'") && Contains("no \"shape\""));
  }
  SECTION("entry is not an object") {
    CHECK_THROWS_WITH(parse(make_file(R"({"w":[1,2]})", {})), Contains(f) && Contains("'w'") && Contains("not an object"));
  }
  SECTION("negative or non-integer shape") {
    CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", zeros(4))),
                      Contains(f) && Contains("shape[0]") && Contains("non-negative integer"));
    CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", zeros(4))),
                      Contains(f) && Contains("shape[0]") && Contains("non-negative integer"));
  }
  SECTION("too many dimensions") {
    CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F32","shape":[1,1,1,1,1,1],"data_offsets":[0,4]}})", zeros(4))),
                      Contains(f) && Contains("6 dimensions"));
  }
  SECTION("shape x dtype size differs from the byte range") {
    CHECK_THROWS_WITH(parse(make_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", zeros(8))),
                      Contains(f) && Contains("'w'") && Contains("shape [3]") && Contains("12 bytes") &&
                          Contains("hold 8 bytes"));
  }
  SECTION("overflowing shape") {
    CHECK_THROWS_WITH(
        parse(make_file(R"({"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", zeros(8))),
        Contains(f) && Contains("overflows"));
    // A zero size makes zero bytes, but the other sizes still must not overflow an element count.
    CHECK_THROWS_WITH(
        parse(make_file(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4,0],"data_offsets":[0,0]}})", {})),
        Contains(f) && Contains("overflows a 64-bit element count"));
  }
  SECTION("overlapping ranges") {
    CHECK_THROWS_WITH(parse(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                      zeros(12))),
                      Contains(f) && Contains("overlap") && Contains("'a'") && Contains("'b'"));
  }
  SECTION("a gap between tensors") {
    CHECK_THROWS_WITH(parse(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                                      zeros(12))),
                      Contains(f) && Contains("belong to no tensor") && Contains("'b'"));
  }
  SECTION("trailing bytes after the last tensor") {
    CHECK_THROWS_WITH(parse(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", zeros(9))),
                      Contains(f) && Contains("trailing bytes"));
  }
  SECTION("end before begin") {
    CHECK_THROWS_WITH(parse(make_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", zeros(4))),
                      Contains(f) && Contains("end before they begin"));
  }
  SECTION("metadata must map strings to strings") {
    CHECK_THROWS_WITH(parse(make_file(R"({"__metadata__":{"k":1}})", {})),
                      Contains(f) && Contains("__metadata__") && Contains("must be strings"));
  }
}

TEST_CASE("safetensors: an empty file and an empty header") {
  const auto c = parse(make_file("{}      ", {}), "empty");
  CHECK(c.tensors.empty());
  CHECK(c.metadata.empty());
  const auto e = serialize_safetensors({});
  CHECK(parse(e).tensors.empty());
}
