// torch.save files: PyTorch 1.13's own output read back exactly (tests/data, written by
// tests/interop/make_torch_fixtures.py), round trips of every dtype, and the reader's refusal
// of malformed archives and pickles, each with an error naming the file and the problem; whole
// objects (TorchValue) and DCGAN training checkpoints with their Adam states, both ways.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <functional>
#include <fstream>
#include <string>
#include <vector>

#include "gantry/core/autograd.h"
#include "gantry/core/torch_checkpoint.h"
#include "gantry/models/dcgan.h"
#include "gantry/models/training_checkpoint.h"
#include "gantry/optim/adam.h"
#include "test_data_util.h"

#if defined(GANTRY_HAVE_LIBZIP)
#include <zip.h>
#endif

using namespace gantry;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

std::string fixture(const std::string& name) { return std::string(GANTRY_TEST_DATA) + "/" + name; }

std::vector<uint8_t> read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

#if !defined(GANTRY_HAVE_LIBZIP)

TEST_CASE("torch checkpoint: a build without libzip says so, naming what still works") {
  CHECK_FALSE(torch_checkpoint_supported());
  CHECK_THROWS_WITH(load_torch_checkpoint(fixture("torch_1_13_checkpoint.pth")),
                    Contains("built without libzip") && Contains("Safetensors files work"));
  StateDict sd{{"w", Tensor::zeros({2}), DType::F32}};
  CHECK_THROWS_WITH(serialize_torch_checkpoint(sd), Contains("built without libzip"));
}

#else

namespace {

// A stored ZIP archive of the given entries, with libzip, for archives torch.save would never
// write (the malformed cases below).
std::vector<uint8_t> zip_of(const std::vector<std::pair<std::string, std::string>>& entries,
                            int32_t method = ZIP_CM_DEFAULT) {
  zip_error_t ze;
  zip_error_init(&ze);
  zip_source_t* mem = zip_source_buffer_create(nullptr, 0, 0, &ze);
  REQUIRE(mem);
  zip_t* za = zip_open_from_source(mem, ZIP_TRUNCATE, &ze);
  REQUIRE(za);
  zip_source_keep(mem);
  for (const auto& [name, bytes] : entries) {
    zip_source_t* s = zip_source_buffer(za, bytes.data(), bytes.size(), 0);
    const zip_int64_t idx = zip_file_add(za, name.c_str(), s, 0);
    REQUIRE(idx >= 0);
    REQUIRE(zip_set_file_compression(za, static_cast<zip_uint64_t>(idx), method, 0) == 0);
  }
  REQUIRE(zip_close(za) == 0);
  REQUIRE(zip_source_open(mem) == 0);
  zip_source_seek(mem, 0, SEEK_END);
  std::vector<uint8_t> out(static_cast<std::size_t>(zip_source_tell(mem)));
  zip_source_seek(mem, 0, SEEK_SET);
  REQUIRE(zip_source_read(mem, out.data(), out.size()) == static_cast<zip_int64_t>(out.size()));
  zip_source_close(mem);
  zip_source_free(mem);
  return out;
}

SafetensorsContents parse(const std::vector<uint8_t>& b, const std::string& name = "bad.pth") {
  return parse_torch_checkpoint(b.data(), b.size(), name);
}

// Pickle pieces (protocol 2), to write data.pkl by hand.
std::string u32(uint32_t v) {
  std::string s(4, '\0');
  for (int k = 0; k < 4; ++k) s[k] = static_cast<char>(v >> (8 * k));
  return s;
}
std::string str(const std::string& s) { return "X" + u32(static_cast<uint32_t>(s.size())) + s; }
std::string int1(int v) { return std::string("K") + static_cast<char>(v); }

// {"w": tensor} whose storage is `key` (`numel` elements of `storage_class`), viewed at
// `offset` with `size`/`stride` (K-encoded ints).
std::string one_tensor_pickle(const std::string& key, int numel, int offset, const std::vector<int>& size,
                              const std::vector<int>& stride, const std::string& storage_class = "FloatStorage") {
  std::string p = "\x80\x02}(" + str("w") + "ctorch._utils\n_rebuild_tensor_v2\n((" + str("storage") +
                  "ctorch\n" + storage_class + "\n" + str(key) + str("cpu") + int1(numel) + "tQ" + int1(offset) + "(";
  for (int s : size) p += int1(s);
  p += "t(";
  for (int s : stride) p += int1(s);
  p += "t\x89)tRu.";
  return p;
}

std::string floats(std::initializer_list<float> v) {
  std::string s;
  for (float f : v) s.append(reinterpret_cast<const char*>(&f), 4);
  return s;
}

}  // namespace

TEST_CASE("torch checkpoint: PyTorch 1.13's torch.save output reads back exactly") {
  REQUIRE(torch_checkpoint_supported());
  const std::string path = fixture("torch_1_13_checkpoint.pth");
  SafetensorsContents c = load_torch_checkpoint(path);
  // The pickle's order: the nested state_dict first, its names joined with '.'.
  std::vector<std::string> names;
  for (const auto& e : c.tensors) names.push_back(e.name);
  CHECK(names == std::vector<std::string>{
                     "netG.main.0.weight", "netG.main.1.weight", "netG.main.1.bias", "netG.main.1.running_mean",
                     "netG.main.1.running_var", "netG.main.1.num_batches_tracked", "view", "row0", "row2",
                     "param", "bf16", "f16", "bool", "u8", "i8", "i16", "i32", "empty",
                     "optG.state.0.step", "optG.state.0.exp_avg"});
  auto get = [&](const std::string& n) {
    const NamedTensor* e = find_tensor(c.tensors, n);
    REQUIRE(e);
    return *e;
  };
  std::vector<float> conv(18);
  for (int i = 0; i < 18; ++i) conv[i] = i / 8.f;
  CHECK(get("netG.main.0.weight").tensor.shape() == Shape{2, 1, 3, 3});
  CHECK(get("netG.main.0.weight").tensor.to_vector() == conv);
  CHECK(get("netG.main.1.bias").tensor.to_vector() == std::vector<float>{-0.25f, 0.125f});
  CHECK(get("netG.main.1.running_var").tensor.to_vector() == std::vector<float>{2.f, 4.f});
  const NamedTensor nbt = get("netG.main.1.num_batches_tracked");
  CHECK(nbt.dtype == DType::I64);
  CHECK(nbt.tensor.shape().empty());
  CHECK(nbt.tensor.to_vector() == std::vector<float>{7.f});
  // base.t()[1:] of arange(12).reshape(3, 4): offset 1, strides (1, 4).
  CHECK(get("view").dtype == DType::F64);
  CHECK(get("view").tensor.shape() == Shape{3, 3});
  CHECK(get("view").tensor.to_vector() == std::vector<float>{1, 5, 9, 2, 6, 10, 3, 7, 11});
  CHECK(get("row0").tensor.to_vector() == std::vector<float>{0, 1, 2, 3});
  CHECK(get("row2").tensor.to_vector() == std::vector<float>{8, 9, 10, 11});
  CHECK(get("param").tensor.to_vector() == std::vector<float>{1.f, -1.f});
  CHECK(get("bf16").dtype == DType::BF16);
  CHECK(get("bf16").tensor.to_vector() == std::vector<float>{1.5f, -2.f});
  CHECK(get("f16").dtype == DType::F16);
  CHECK(get("f16").tensor.to_vector() == std::vector<float>{0.5f, 65504.f});
  CHECK(get("bool").dtype == DType::BOOL);
  CHECK(get("bool").tensor.to_vector() == std::vector<float>{1, 0, 1});
  CHECK(get("u8").tensor.to_vector() == std::vector<float>{0, 7, 255});
  CHECK(get("i8").tensor.to_vector() == std::vector<float>{-128, 127});
  CHECK(get("i16").tensor.to_vector() == std::vector<float>{-300});
  CHECK(get("i32").dtype == DType::I32);
  CHECK(get("i32").tensor.to_vector() == std::vector<float>{-3, 4});
  CHECK(get("empty").tensor.shape() == Shape{0, 3});
  CHECK(get("optG.state.0.step").tensor.to_vector() == std::vector<float>{3.f});
  // Everything that is not a tensor, as text (Python's repr of the numbers).
  CHECK(c.metadata == Metadata{{"epoch", "5"}, {"lr", "0.0002"}, {"name", "dcgan"}, {"flag", "True"},
                               {"none", "None"}, {"betas.0", "0.5"}, {"betas.1", "0.999"},
                               {"optG.param_groups.0.lr", "0.0002"}, {"optG.param_groups.0.params.0", "0"}});
  // One model out of the training checkpoint, as dcgan_generate --key netG takes it.
  StateDict g = sub_state_dict(c.tensors, "netG");
  REQUIRE(g.size() == 6);
  CHECK(g[0].name == "main.0.weight");
  CHECK_THROWS_WITH(sub_state_dict(c.tensors, "netD"), Contains("no tensors under 'netD'") && Contains("netG"));
}

TEST_CASE("torch checkpoint: numpy scalars and arrays in a training checkpoint become metadata") {
  const SafetensorsContents c = load_torch_checkpoint(fixture("torch_1_13_numpy_meta.pth"));
  REQUIRE(c.tensors.size() == 1);
  CHECK(c.tensors[0].name == "netG.w");
  CHECK(c.metadata == Metadata{{"best_kid", "0.03125"}, {"step", "1200"}, {"ok", "True"},
                               {"hist", "<numpy array f4 [3]>"}});
}

TEST_CASE("torch checkpoint: what is not a state_dict is refused with what to save instead") {
  CHECK_THROWS_WITH(load_torch_checkpoint(fixture("torch_1_13_whole_model.pth")),
                    Contains("torch_1_13_whole_model.pth") && Contains("torch.nn.modules.container.Sequential") &&
                        Contains("save model.state_dict() instead"));
  CHECK_THROWS_WITH(load_tensor_file(fixture("torch_1_13_legacy.pth")),
                    Contains("torch_1_13_legacy.pth") && Contains("legacy format"));
  CHECK_THROWS_WITH(parse(zip_of({{"m/data.pkl", "\x80\x02}."}, {"m/constants.pkl", "\x80\x02)."}})),
                    Contains("TorchScript archive"));
  CHECK_THROWS_WITH(parse(zip_of({{"m/other.txt", "x"}})), Contains("without <folder>/data.pkl"));
  const std::vector<uint8_t> text = {'h', 'e', 'l', 'l', 'o'};
  CHECK_THROWS_WITH(parse(text, "notes.pth"), Contains("'notes.pth'") && Contains("does not start with a ZIP header"));
  // A tensor alone, or a list, is not a dict of named tensors.
  const std::string t = one_tensor_pickle("0", 2, 0, {2}, {1});
  CHECK_THROWS_WITH(parse(zip_of({{"a/data.pkl", "\x80\x02]."}})), Contains("holds a list, not a dict"));
  CHECK_NOTHROW(parse(zip_of({{"a/data.pkl", t}, {"a/data/0", floats({1, 2})}})));
}

TEST_CASE("torch checkpoint: round trip of every dtype keeps names, order, shapes and values") {
  StateDict sd;
  sd.push_back({"conv.weight", Tensor::from_vector({1, -2, 3.5f, 0.25f, -0.125f, 6, 7, 8}, {2, 1, 2, 2}), DType::F32});
  sd.push_back({"bn.num_batches_tracked", Tensor::from_vector({123456784.f}, {}), DType::I64});
  sd.push_back({"f64", Tensor::from_vector({1e30f, -1e-30f}, {2}), DType::F64});
  sd.push_back({"f16", Tensor::from_vector({0.5f, -65504.f}, {2}), DType::F16});
  sd.push_back({"bf16", Tensor::from_vector({1.5f, -256.f}, {2, 1}), DType::BF16});
  sd.push_back({"i32", Tensor::from_vector({-70000.f, 70000.f}, {2}), DType::I32});
  sd.push_back({"i16", Tensor::from_vector({-300}, {1}), DType::I16});
  sd.push_back({"i8", Tensor::from_vector({-128, 127}, {2}), DType::I8});
  sd.push_back({"u8", Tensor::from_vector({0, 255}, {2}), DType::U8});
  sd.push_back({"bool", Tensor::from_vector({1, 0, 1}, {3}), DType::BOOL});
  sd.push_back({"empty", Tensor::zeros({0, 4}), DType::F32});
  sd.push_back({"big", Tensor::from_vector(std::vector<float>(70000, 0.75f), {70000}), DType::F32});
  const std::vector<uint8_t> bytes = serialize_torch_checkpoint(sd);
  SafetensorsContents back = parse(bytes, "roundtrip.pth");
  REQUIRE(back.tensors.size() == sd.size());
  CHECK(back.metadata.empty());
  for (std::size_t i = 0; i < sd.size(); ++i) {
    INFO(sd[i].name);
    CHECK(back.tensors[i].name == sd[i].name);
    CHECK(back.tensors[i].dtype == sd[i].dtype);
    CHECK(back.tensors[i].tensor.shape() == sd[i].tensor.shape());
    CHECK(back.tensors[i].tensor.to_vector() == sd[i].tensor.to_vector());
  }
  // The same tensors give the same bytes (fixed dates in the archive).
  CHECK(serialize_torch_checkpoint(sd) == bytes);
}

TEST_CASE("torch checkpoint: the writer refuses what torch.load could not give back") {
  StateDict dup{{"a", Tensor::zeros({1}), DType::F32}, {"a", Tensor::zeros({1}), DType::F32}};
  CHECK_THROWS_WITH(serialize_torch_checkpoint(dup), Contains("duplicate tensor name 'a'"));
  StateDict empty_name{{"", Tensor::zeros({1}), DType::F32}};
  CHECK_THROWS_WITH(serialize_torch_checkpoint(empty_name), Contains("empty name"));
  StateDict undefined{{"u", Tensor(), DType::F32}};
  CHECK_THROWS_WITH(serialize_torch_checkpoint(undefined), Contains("'u' is undefined"));
  StateDict frac{{"n", Tensor::from_vector({1.5f}, {1}), DType::I64}};
  CHECK_THROWS_WITH(serialize_torch_checkpoint(frac),
                    Contains("save_torch_checkpoint") && Contains("'n'") && Contains("not an integer"));
}

TEST_CASE("torch checkpoint: save is atomic, and load_tensor_file tells the formats apart") {
  const fs::path dir = testdata::fresh_dir("torch_checkpoint");
  const std::string pth = (dir / "netG.pth").string(), st = (dir / "netG.safetensors").string();
  StateDict sd{{"main.0.weight", Tensor::from_vector({1, 2, 3, 4}, {1, 1, 2, 2}), DType::F32},
               {"main.1.num_batches_tracked", Tensor::from_vector({3}, {}), DType::I64}};
  { std::ofstream(pth) << "an older file"; }
  save_tensor_file(pth, sd);  // .pth: torch.save's format
  save_tensor_file(st, sd, {{"model", "dcgan"}});
  const std::vector<uint8_t> zip_magic = {'P', 'K', 3, 4};
  const std::vector<uint8_t> pth_bytes = read_all(pth), st_bytes = read_all(st);
  CHECK(std::vector<uint8_t>(pth_bytes.begin(), pth_bytes.begin() + 4) == zip_magic);  // torch.save's format
  CHECK_FALSE(std::vector<uint8_t>(st_bytes.begin(), st_bytes.begin() + 4) == zip_magic);
  CHECK(is_torch_checkpoint_path(pth));
  CHECK_FALSE(is_torch_checkpoint_path(st));
  for (const auto& e : fs::directory_iterator(dir))
    CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
  for (const std::string& p : {pth, st}) {
    SafetensorsContents c = load_tensor_file(p);
    REQUIRE(c.tensors.size() == 2);
    CHECK(c.tensors[0].tensor.to_vector() == std::vector<float>{1, 2, 3, 4});
    CHECK(c.tensors[1].dtype == DType::I64);
  }
  CHECK(load_tensor_file(st).metadata.at("model") == "dcgan");
  CHECK(pth_bytes == serialize_torch_checkpoint(sd));
  CHECK_THROWS_WITH(load_torch_checkpoint((dir / "missing.pth").string()),
                    Contains("missing.pth") && Contains("cannot open"));
  CHECK_THROWS_WITH(save_torch_checkpoint((dir / "no" / "such" / "dir.pth").string(), sd),
                    Contains("dir.pth") && Contains("temporary file"));
}

TEST_CASE("torch checkpoint: the records newer PyTorch adds are accepted, the folder name is any") {
  // PyTorch 2.x writes byteorder, .data/version and .data/serialization_id beside data.pkl, and
  // PyTorch < 1.9 named the folder after the file ("netG_epoch_24/").
  const std::string pkl = one_tensor_pickle("0", 2, 0, {2}, {1});
  SafetensorsContents c = parse(zip_of({{"netG_epoch_24/data.pkl", pkl}, {"netG_epoch_24/byteorder", "little"},
                                        {"netG_epoch_24/data/0", floats({1.5f, -2.f})},
                                        {"netG_epoch_24/version", "3\n"}, {"netG_epoch_24/.data/version", "3\n"},
                                        {"netG_epoch_24/.data/serialization_id", "1234567890123456789012345678901234567890"}}));
  REQUIRE(c.tensors.size() == 1);
  CHECK(c.tensors[0].name == "w");
  CHECK(c.tensors[0].tensor.to_vector() == std::vector<float>{1.5f, -2.f});
  // Deflated entries (an archive re-zipped by hand) read the same.
  const std::vector<std::pair<std::string, std::string>> entries = {{"a/data.pkl", pkl}, {"a/data/0", floats({3.f, 4.f})}};
  const std::vector<uint8_t> stored = zip_of(entries, ZIP_CM_STORE), deflated = zip_of(entries, ZIP_CM_DEFLATE);
  REQUIRE(deflated.size() > 30);
  CHECK(deflated[8] == 8);  // the first local header's method: deflate
  CHECK(stored[8] == 0);    // and stored
  CHECK(parse(deflated).tensors.at(0).tensor.to_vector() == std::vector<float>{3.f, 4.f});
  CHECK(parse(stored).tensors.at(0).tensor.to_vector() == std::vector<float>{3.f, 4.f});
}

TEST_CASE("torch checkpoint: views are read through their offset and strides, and checked") {
  const std::string data = floats({0, 1, 2, 3, 4, 5});
  // [2, 2] at offset 1 with strides (3, 1): elements 1, 2, 4, 5.
  SafetensorsContents c = parse(zip_of({{"a/data.pkl", one_tensor_pickle("0", 6, 1, {2, 2}, {3, 1})}, {"a/data/0", data}}));
  REQUIRE(c.tensors.size() == 1);
  CHECK(c.tensors[0].tensor.to_vector() == std::vector<float>{1, 2, 4, 5});
  // Transposed: strides (1, 3) over [3, 2] -> 0 3 1 4 2 5.
  c = parse(zip_of({{"a/data.pkl", one_tensor_pickle("0", 6, 0, {3, 2}, {1, 3})}, {"a/data/0", data}}));
  CHECK(c.tensors[0].tensor.to_vector() == std::vector<float>{0, 3, 1, 4, 2, 5});
  // Past the storage's end: 2 + (2-1)*3 + (2-1)*1 = 6, of a 6-element storage.
  CHECK_THROWS_WITH(parse(zip_of({{"a/data.pkl", one_tensor_pickle("0", 6, 2, {2, 2}, {3, 1})}, {"a/data/0", data}})),
                    Contains("reaches element 6 of storage '0', which has 6"));
  // The storage record is missing, or shorter than its element count.
  CHECK_THROWS_WITH(parse(zip_of({{"a/data.pkl", one_tensor_pickle("7", 6, 0, {6}, {1})}, {"a/data/0", data}})),
                    Contains("no record data/7"));
  CHECK_THROWS_WITH(parse(zip_of({{"a/data.pkl", one_tensor_pickle("0", 8, 0, {6}, {1})}, {"a/data/0", data}})),
                    Contains("holds 24 bytes") && Contains("8 F32 elements need 32"));
  CHECK_THROWS_WITH(parse(zip_of({{"a/data.pkl", one_tensor_pickle("0", 6, 0, {6}, {1}, "ComplexFloatStorage")},
                                  {"a/data/0", data}})),
                    Contains("torch.ComplexFloatStorage is not supported"));
  CHECK_THROWS_WITH(parse(zip_of({{"a/data.pkl", one_tensor_pickle("0", 6, 0, {6}, {1})}, {"a/data/0", data},
                                  {"a/byteorder", "big"}})),
                    Contains("big-endian"));
  // A stride-0 view repeating one element would decode to far more than the file holds.
  std::string huge = "\x80\x02}(" + str("w") + "ctorch._utils\n_rebuild_tensor_v2\n((" + str("storage") +
                     "ctorch\nFloatStorage\n" + str("0") + str("cpu") + int1(1) + "tQ" + int1(0) +
                     "(J" + u32(1u << 30) + "t(" + int1(0) + "t\x89)tRu.";
  CHECK_THROWS_WITH(parse(zip_of({{"a/data.pkl", huge}, {"a/data/0", floats({1})}})),
                    Contains("would take") && Contains("views repeating their storage"));
}

TEST_CASE("torch checkpoint: malformed pickles are errors naming the byte and the problem") {
  const std::string data = floats({1, 2});
  auto with = [&](const std::string& pkl) { return zip_of({{"a/data.pkl", pkl}, {"a/data/0", data}}); };
  CHECK_THROWS_WITH(parse(with("\x80\x02}\xff.")), Contains("data.pkl at byte 3") && Contains("opcode 0xff"));
  CHECK_THROWS_WITH(parse(with("\x80\x02}")), Contains("ends without STOP"));
  CHECK_THROWS_WITH(parse(with("\x80\x02}}.")), Contains("STOP with 2 values"));
  CHECK_THROWS_WITH(parse(with("\x80\x02h\x05.")), Contains("memo entry 5 was never stored"));
  CHECK_THROWS_WITH(parse(with("\x80\x02u.")), Contains("no MARK"));
  const std::string one_point_oh("G\x3f\xf0\0\0\0\0\0\0", 9);  // BINFLOAT 1.0 (big-endian)
  CHECK_THROWS_WITH(parse(with("\x80\x02}(" + one_point_oh + int1(1) + "u.")),
                    Contains("dict key of type float"));
  // A list that holds itself (through the memo) nests without end.
  CHECK_THROWS_WITH(parse(with("\x80\x02}(" + str("x") + "]q\x01h\x01" "au.")), Contains("deeper than 64 levels"));
  CHECK_THROWS_WITH(parse(with("\x80\x02}(" + str("w") + "ctorch._utils\n_rebuild_tensor_v2\n(" + str("oops") +
                               int1(0) + ")" ")tRu.")),
                    Contains("storage is a str"));
  // A tensor subclass: _rebuild_from_type_v2(func, type, args, state) calls func(*args); nested
  // calls are followed 4 deep, no further (the reader's recursion is bounded on any input).
  const std::string from_type = "ctorch._utils\n_rebuild_from_type_v2\n";
  const std::string tensor_args = "((" + str("storage") + "ctorch\nFloatStorage\n" + str("0") + str("cpu") + int1(2) +
                                  "tQ" + int1(0) + "(" + int1(2) + "t(" + int1(1) + "t\x89)t";
  auto subclass = [&](int levels) {
    std::string args = "(ctorch._utils\n_rebuild_tensor_v2\nctorch\nTensor\n" + tensor_args + "}t";
    for (int k = 1; k < levels; ++k) args = "(" + from_type + "ctorch\nTensor\n" + args + "}t";
    return with("\x80\x02}(" + str("w") + from_type + args + "Ru.");
  };
  CHECK(parse(subclass(4)).tensors.at(0).tensor.to_vector() == std::vector<float>{1, 2});
  CHECK_THROWS_WITH(parse(subclass(5)), Contains("nested more than 4 deep"));
  // Every truncation of a valid pickle is an error, never a crash or a partial load.
  const std::string good = one_tensor_pickle("0", 2, 0, {2}, {1});
  REQUIRE(parse(with(good)).tensors.size() == 1);
  for (std::size_t n = 0; n < good.size(); ++n) {
    INFO("data.pkl cut to " << n << " bytes");
    CHECK_THROWS_AS(parse(with(good.substr(0, n))), std::runtime_error);
  }
}

TEST_CASE("torch checkpoint: every truncation of a real archive is an error naming the file") {
  const std::vector<uint8_t> good = read_all(fixture("torch_1_13_checkpoint.pth"));
  REQUIRE(good.size() > 1000);
  for (std::size_t n = 0; n < good.size(); n += 97) {
    INFO("cut to " << n << " bytes");
    std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    CHECK_THROWS_WITH(parse(cut, "cut.pth"), Contains("'cut.pth'"));
  }
  // One flipped bit inside a storage (the conv weight's 0.125, 0.25, 0.375): the CRC catches it.
  std::vector<uint8_t> flipped = good;
  const std::string weights = floats({0.125f, 0.25f, 0.375f});
  const std::vector<uint8_t> marker(weights.begin(), weights.end());
  auto at = std::search(flipped.begin(), flipped.end(), marker.begin(), marker.end());
  REQUIRE(at != flipped.end());
  at[5] ^= 0x40;
  CHECK_THROWS_WITH(parse(flipped, "flipped.pth"), Contains("'flipped.pth'"));
}


// ---- whole objects and training checkpoints ---------------------------------------------------

TEST_CASE("torch object: every kind of value reads back, nested, in order") {
  TorchValue inner = TorchValue::dict();
  inner.set(0, TorchValue::dict().set("step", TorchValue::tensor(Tensor::full({}, 3.f))));
  inner.set(7, TorchValue::dict());  // empty dicts and lists vanish when flattened
  TorchValue root = TorchValue::dict();
  root.set("net", TorchValue::state_dict({{"w", Tensor::from_vector({1.f, -2.f, 0.5f}, {3}), DType::F32},
                                          {"n", Tensor::full({}, 9.f), DType::I64}}));
  root.set("state", std::move(inner));
  root.set("lr", TorchValue::real(0.0002));
  root.set("tiny", TorchValue::real(-1e-300));
  root.set("betas", TorchValue::tuple({TorchValue::real(0.5), TorchValue::real(0.999)}));
  root.set("params", TorchValue::list({TorchValue::integer(0), TorchValue::integer(70000),
                                       TorchValue::integer(-5), TorchValue::integer(int64_t{1} << 40)}));
  root.set("flags", TorchValue::list().push(TorchValue::boolean(true)).push(TorchValue::boolean(false)).push(TorchValue()));
  root.set("name", TorchValue::string("dcgan \xc3\xa9"));
  root.set("empty", TorchValue::list());
  const auto bytes = serialize_torch_object(root);
  const SafetensorsContents c = parse_torch_checkpoint(bytes.data(), bytes.size(), "obj.pth");
  REQUIRE(c.tensors.size() == 3);
  CHECK(c.tensors[0].name == "net.w");
  CHECK(c.tensors[0].tensor.to_vector() == std::vector<float>{1.f, -2.f, 0.5f});
  CHECK(c.tensors[1].name == "net.n");
  CHECK(c.tensors[1].dtype == DType::I64);
  CHECK(c.tensors[1].tensor.shape().empty());
  CHECK(c.tensors[2].name == "state.0.step");
  CHECK(c.tensors[2].tensor.item() == 3.f);
  CHECK(c.metadata.at("lr") == "0.0002");
  CHECK(c.metadata.at("tiny") == "-1e-300");
  CHECK(c.metadata.at("betas.1") == "0.999");
  CHECK(c.metadata.at("params.1") == "70000");
  CHECK(c.metadata.at("params.2") == "-5");
  CHECK(c.metadata.at("params.3") == "1099511627776");
  CHECK(c.metadata.at("flags.0") == "True");
  CHECK(c.metadata.at("flags.1") == "False");
  CHECK(c.metadata.at("flags.2") == "None");
  CHECK(c.metadata.at("name") == "dcgan \xc3\xa9");
  CHECK(c.metadata.size() == 12);
}

TEST_CASE("torch object: builder misuse is an error naming the key") {
  TorchValue d = TorchValue::dict();
  d.set("a", TorchValue::integer(1));
  CHECK_THROWS_WITH(d.set("a", TorchValue()), Contains("'a' is already in the dict"));
  d.set(1, TorchValue());
  CHECK_THROWS_WITH(d.set(1, TorchValue()), Contains("'1' is already"));
  CHECK_THROWS_WITH(d.set("", TorchValue()), Contains("empty key"));
  CHECK_THROWS_AS(d.push(TorchValue()), std::logic_error);
  CHECK_THROWS_AS(TorchValue::list().set("x", TorchValue()), std::logic_error);
  CHECK_THROWS_WITH(TorchValue::tensor(Tensor()), Contains("undefined"));
}

namespace {

// Adam over two parameters after `steps` updates with fixed gradients.
struct SmallAdam {
  Tensor a = Tensor::from_vector({0.5f, -1.f, 2.f}, {3}).requires_grad_(true);
  Tensor b = Tensor::from_vector({1.f, 2.f, 3.f, 4.f}, {2, 2}).requires_grad_(true);
  Adam adam;
  explicit SmallAdam(AdamOptions o = {0.01, 0.5, 0.999, 1e-8, 0}) : adam({a, b}, o) {}
  void step(float k) {
    a.set_grad(Tensor::from_vector({0.1f * k, -0.2f, 0.3f}, {3}));
    b.set_grad(Tensor::from_vector({-0.5f, 0.25f * k, 1.f, -1.f}, {2, 2}));
    adam.step();
  }
};

SafetensorsContents through_file(const TorchValue& v) {
  const auto bytes = serialize_torch_object(v);
  return parse_torch_checkpoint(bytes.data(), bytes.size(), "ck.pth");
}

}  // namespace

TEST_CASE("torch Adam state: gantry -> torch.optim.Adam's form -> gantry continues identically") {
  SmallAdam x;
  x.step(1);
  x.step(2);
  const TorchValue torch_form = adam_state_to_torch(x.adam.state_dict(), 2, x.adam.options());
  const SafetensorsContents c = through_file(TorchValue::dict().set("optimizerG", torch_form));
  CHECK(c.metadata.at("optimizerG.param_groups.0.lr") == "0.01");
  CHECK(c.metadata.at("optimizerG.param_groups.0.betas.0") == "0.5");
  CHECK(c.metadata.at("optimizerG.param_groups.0.amsgrad") == "False");
  CHECK(c.metadata.at("optimizerG.param_groups.0.params.1") == "1");
  CHECK(is_torch_optimizer_state(c, "optimizerG"));
  CHECK_FALSE(is_torch_optimizer_state(c, "netG"));
  const TorchAdamState st = adam_state_from_torch(c, "optimizerG");
  CHECK(st.num_params == 2);
  CHECK(st.max_step == 2);
  CHECK(st.options.lr == 0.01);
  CHECK(st.options.beta1 == 0.5);
  CHECK(st.options.beta2 == 0.999);

  SmallAdam y(st.options);  // the weights as x has them now (the model's file), the state from torch's form
  {
    NoGradGuard no_grad;
    y.a.copy_(x.a);
    y.b.copy_(x.b);
  }
  y.adam.load_state_dict(st.state);
  CHECK(y.adam.step_count(1) == 2);
  x.step(3);
  y.step(3);
  CHECK(x.a.to_vector() != std::vector<float>{0.5f, -1.f, 2.f});
  CHECK(y.a.to_vector() == x.a.to_vector());  // bit for bit: the state carried every bit
  CHECK(y.b.to_vector() == x.b.to_vector());
}

TEST_CASE("torch Adam state: what gantry's Adam cannot continue is refused, saying why") {
  SmallAdam x;
  x.step(1);
  auto with = [&](const std::function<void(TorchValue&)>& change) {
    TorchValue group = TorchValue::dict();
    group.set("lr", TorchValue::real(0.01));
    group.set("betas", TorchValue::tuple({TorchValue::real(0.5), TorchValue::real(0.999)}));
    group.set("params", TorchValue::list({TorchValue::integer(0), TorchValue::integer(1)}));
    TorchValue state = TorchValue::dict();
    state.set(0, TorchValue::dict()
                     .set("step", TorchValue::integer(4))  // PyTorch < 1.12 saved an int
                     .set("exp_avg", TorchValue::tensor(Tensor::zeros({3})))
                     .set("exp_avg_sq", TorchValue::tensor(Tensor::zeros({3}))));
    TorchValue opt = TorchValue::dict();
    TorchValue groups = TorchValue::list();
    change(group);
    groups.push(std::move(group));
    opt.set("state", std::move(state));
    opt.set("param_groups", std::move(groups));
    return through_file(TorchValue::dict().set("opt", std::move(opt)));
  };
  const TorchAdamState old = adam_state_from_torch(with([](TorchValue&) {}), "opt");
  CHECK(old.max_step == 4);
  x.adam.load_state_dict(old.state);
  CHECK(x.adam.step_count(0) == 4);
  CHECK_THROWS_WITH(adam_state_from_torch(with([](TorchValue& g) { g.set("amsgrad", TorchValue::boolean(true)); }), "opt"),
                    Contains("optimizer 'opt'") && Contains("amsgrad=True"));
  CHECK_THROWS_WITH(adam_state_from_torch(with([](TorchValue& g) { g.set("maximize", TorchValue::boolean(true)); }), "opt"),
                    Contains("maximize=True"));
  CHECK_THROWS_WITH(adam_state_from_torch(with([](TorchValue& g) { g.set("eps", TorchValue::string("x")); }), "opt"),
                    Contains("['eps'] is not a number"));

  TorchValue two = TorchValue::dict();
  TorchValue g0 = TorchValue::dict().set("lr", TorchValue::real(0.1)).set("params", TorchValue::list({TorchValue::integer(0)}));
  TorchValue g1 = TorchValue::dict().set("lr", TorchValue::real(0.1)).set("params", TorchValue::list({TorchValue::integer(1)}));
  two.set("state", TorchValue::dict());
  two.set("param_groups", TorchValue::list({std::move(g0), std::move(g1)}));
  CHECK_THROWS_WITH(adam_state_from_torch(through_file(TorchValue::dict().set("o", std::move(two))), "o"),
                    Contains("more than one param group"));

  TorchValue sgd = TorchValue::dict();
  sgd.set("state", TorchValue::dict().set(0, TorchValue::dict().set("momentum_buffer", TorchValue::tensor(Tensor::zeros({3})))));
  sgd.set("param_groups", TorchValue::list({TorchValue::dict().set("lr", TorchValue::real(0.1)).set(
                              "params", TorchValue::list({TorchValue::integer(0)}))}));
  CHECK_THROWS_WITH(adam_state_from_torch(through_file(TorchValue::dict().set("o", std::move(sgd))), "o"),
                    Contains("'momentum_buffer'") && Contains("step, exp_avg and exp_avg_sq"));
  CHECK_THROWS_WITH(adam_state_to_torch(x.adam.state_dict(), 0, {}), Contains("the optimizer has 0"));
}

TEST_CASE("torch training checkpoint: PyTorch 1.13's run continues in gantry exactly (fixture)") {
  // tests/interop/make_torch_fixtures.py: two steps of the DCGAN loop at 32x32 (nz 8, ngf 4,
  // ndf 4, gray), saved as {"G", "D", "opt_gen", "opt_disc", "epoch"}; then one more G update
  // with fixed gradients, and G's parameters after it.
  const SafetensorsContents c = load_torch_checkpoint(fixture("torch_1_13_dcgan_training.pth"));
  const DCGANTrainingCheckpoint ck = dcgan_checkpoint_from_torch(c, "training.pth");
  CHECK(ck.generator_key == "G");
  CHECK(ck.discriminator_key == "D");
  CHECK(ck.optimizer_g_key == "opt_gen");
  CHECK(ck.optimizer_d_key == "opt_disc");
  CHECK(ck.counters.at("epoch") == 1);
  REQUIRE(ck.optimizer_g);
  CHECK(ck.optimizer_g->max_step == 2);
  CHECK(ck.optimizer_g->options.lr == 0.0002);
  CHECK(ck.optimizer_g->options.beta1 == 0.5);

  auto g = generator_from_state_dict(ck.generator);
  CHECK(g->nz == 8);
  CHECK(g->image_size == 32);
  Adam adam(g->parameters(), ck.optimizer_g->options);
  adam.load_state_dict(ck.optimizer_g->state);
  const SafetensorsContents next = load_torch_checkpoint(fixture("torch_1_13_dcgan_next_step.pth"));
  const auto named = g->named_parameters();
  for (const auto& [name, p] : named) {
    Tensor grad;
    for (const auto& e : next.tensors)
      if (e.name == "grad." + name) grad = e.tensor;
    REQUIRE(grad.defined());
    p.set_grad(grad);
  }
  adam.step();
  for (const auto& [name, p] : named) {
    Tensor after;
    for (const auto& e : next.tensors)
      if (e.name == "after." + name) after = e.tensor;
    REQUIRE(after.defined());
    const auto got = p.to_vector(), want = after.to_vector();
    double err = 0, ref = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      err += (got[i] - want[i]) * double(got[i] - want[i]);
      ref += want[i] * double(want[i]);
    }
    INFO(name);
    CHECK(std::sqrt(err / ref) < 1e-6);  // float rounding of the same formula, not a new start
  }
}

TEST_CASE("torch training checkpoint: gantry's run round-trips, and ambiguous files say which key to give") {
  auto g = make_generator(8, 4, 1, 32);
  auto d = make_discriminator(1, 4, 32);
  DCGANTrainingCheckpoint out;
  out.generator = g->state_dict();
  out.discriminator = d->state_dict();
  out.generator_ema = g->state_dict();
  out.counters = {{"step", 12}, {"epoch", 3}};
  const SafetensorsContents c = through_file(dcgan_checkpoint_to_torch(out));
  const DCGANTrainingCheckpoint in = dcgan_checkpoint_from_torch(c, "ck.pth");
  CHECK(in.generator_key == "netG");  // netG and netG_ema are both generators: netG wins
  CHECK(in.discriminator_key == "netD");
  CHECK(in.generator_ema.size() == out.generator.size());
  CHECK_FALSE(in.optimizer_g);
  CHECK(in.counters.at("step") == 12);
  REQUIRE(in.generator.size() == out.generator.size());
  for (std::size_t i = 0; i < in.generator.size(); ++i) {
    CHECK(in.generator[i].name == out.generator[i].name);
    CHECK(in.generator[i].tensor.to_vector() == out.generator[i].tensor.to_vector());
  }

  TorchValue two = TorchValue::dict();
  two.set("G1", TorchValue::state_dict(g->state_dict()));
  two.set("G2", TorchValue::state_dict(g->state_dict()));
  two.set("D", TorchValue::state_dict(d->state_dict()));
  const SafetensorsContents t = through_file(two);
  CHECK_THROWS_WITH(dcgan_checkpoint_from_torch(t, "two.pth"),
                    Contains("two.pth") && Contains("several DCGAN generators (G1, G2)") && Contains("--netG-key"));
  CHECK(dcgan_checkpoint_from_torch(t, "two.pth", "G2").generator_key == "G2");
  CHECK_THROWS_WITH(dcgan_checkpoint_from_torch(t, "two.pth", "D"), Contains("'D' is not a DCGAN generator"));
  const SafetensorsContents none = through_file(TorchValue::dict().set("epoch", TorchValue::integer(1)));
  CHECK_THROWS_WITH(dcgan_checkpoint_from_torch(none, "none.pth"),
                    Contains("no DCGAN generator") && Contains("its keys: epoch"));

  // An optimizer that fits neither model (another network's) is an error, not ignored.
  SmallAdam other;
  other.step(1);
  TorchValue mixed = TorchValue::dict();
  mixed.set("netG", TorchValue::state_dict(g->state_dict()));
  mixed.set("netD", TorchValue::state_dict(d->state_dict()));
  mixed.set("optimizerG", adam_state_to_torch(other.adam.state_dict(), 2, other.adam.options()));
  CHECK_THROWS_WITH(dcgan_checkpoint_from_torch(through_file(mixed), "mixed.pth"),
                    Contains("optimizer 'optimizerG' has 2 parameters") && Contains("'netG' has 10"));
}

#endif
