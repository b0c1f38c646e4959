// safetensors: round trips (F32, BF16, metadata, shards + index), the byte layout the format
// prescribes (8-byte LE length, space padding to 8, offsets tiling the buffer), every corruption
// the reference reader rejects, and the fp32 <-> bf16 rounding against a brute-force reference.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

#include "base/error.h"
#include "checkpoint/safetensors.h"

namespace origami {
namespace {

namespace fs = std::filesystem;

std::string scratch(const std::string& name) {
  const fs::path dir = fs::path(ORIGAMI_BINARY_DIR) / "test_scratch" / "safetensors" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

HostTensor random_tensor(std::vector<int64_t> shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  HostTensor t{std::move(shape), {}};
  t.data.resize(size_t(numel(t.shape)));
  for (float& v : t.data) v = dist(rng);
  return t;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// A file with a hand-written header (padded as the format requires unless raw_length is given)
// followed by `body` bytes, for the corruption cases.
std::string write_raw(const std::string& dir, const std::string& header, size_t body,
                      std::optional<uint64_t> raw_length = std::nullopt) {
  std::string h = header;
  h.append((8 - h.size() % 8) % 8, ' ');
  const uint64_t n = raw_length.value_or(h.size());
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &n, 8);
  bytes += h;
  bytes.append(body, '\x11');
  const std::string path = dir + "/raw.safetensors";
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  return path;
}

// The Error thrown by read_safetensors(path), which must name the file.
std::string read_error(const std::string& path) {
  try {
    read_safetensors(path);
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    return msg;
  }
  ADD_FAILURE() << "read_safetensors accepted a corrupt file " << path;
  return "";
}

TEST(Safetensors, RoundTripF32Bf16AndMetadata) {
  const std::string dir = scratch("roundtrip");
  StTensorMap tensors;
  tensors["a.weight"] = encode_tensor(random_tensor({3, 5}, 1), "F32");
  tensors["b.weight"] = encode_tensor(random_tensor({7}, 2), "BF16");
  tensors["c.scalar"] = encode_tensor(HostTensor{{}, {4.5f}}, "F32");
  tensors["d.empty"] = encode_tensor(HostTensor{{0, 4}, {}}, "BF16");
  const std::string path = dir + "/m.safetensors";
  write_safetensors(path, tensors, {{"step", "12"}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  StFile back = read_safetensors(path);
  EXPECT_EQ(back.tensors, tensors);
  EXPECT_EQ(back.metadata, (StMetadata{{"format", "pt"}, {"step", "12"}}));
  // F32 decodes to the very same floats; BF16 to the bf16 rounding of each.
  const HostTensor a = decode_tensor(back.tensors.at("a.weight"), "a.weight");
  EXPECT_EQ(a, random_tensor({3, 5}, 1));
  const HostTensor b = decode_tensor(back.tensors.at("b.weight"), "b.weight");
  const HostTensor b0 = random_tensor({7}, 2);
  for (size_t i = 0; i < b0.data.size(); ++i)
    EXPECT_EQ(b.data[i], bf16_to_float(bf16_bits(b0.data[i])));
}

TEST(Safetensors, ByteLayout) {
  const std::string dir = scratch("layout");
  StTensorMap tensors;
  tensors["a_bf16"] = encode_tensor(random_tensor({3}, 3), "BF16");   // 6 bytes
  tensors["b_f32"] = encode_tensor(random_tensor({2, 2}, 4), "F32");  // 16 bytes
  tensors["c_f32"] = encode_tensor(random_tensor({1}, 5), "F32");     // 4 bytes
  const std::string path = dir + "/m.safetensors";
  write_safetensors(path, tensors);
  const std::vector<uint8_t> bytes = read_bytes(path);

  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  ASSERT_LE(8 + n, bytes.size());
  EXPECT_EQ(n % 8, 0u) << "header must be padded to a multiple of 8";
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + std::ptrdiff_t(n));
  EXPECT_EQ(header.front(), '{');
  const size_t last = header.find_last_not_of(' ');
  EXPECT_EQ(header[last], '}');
  EXPECT_LT(header.size() - last - 1, 8u) << "padding is fewer than 8 spaces";

  const auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j["__metadata__"], nlohmann::json({{"format", "pt"}}));
  // Larger itemsize first, then by name: b_f32 [0,16), c_f32 [16,20), a_bf16 [20,26).
  EXPECT_EQ(j["b_f32"]["data_offsets"], nlohmann::json({0, 16}));
  EXPECT_EQ(j["c_f32"]["data_offsets"], nlohmann::json({16, 20}));
  EXPECT_EQ(j["a_bf16"]["data_offsets"], nlohmann::json({20, 26}));
  EXPECT_EQ(j["b_f32"]["shape"], nlohmann::json({2, 2}));
  EXPECT_EQ(j["a_bf16"]["dtype"], "BF16");
  EXPECT_EQ(bytes.size(), 8 + n + 26);
  // Offsets are relative to byte 8 + N, data little-endian row-major.
  for (const auto& [name, t] : tensors) {
    const uint64_t b = j[name]["data_offsets"][0];
    EXPECT_TRUE(std::equal(t.data.begin(), t.data.end(), bytes.begin() + std::ptrdiff_t(8 + n + b)))
        << name;
  }
  float first = 0;
  std::memcpy(&first, bytes.data() + 8 + n, 4);
  EXPECT_EQ(first, random_tensor({2, 2}, 4).data[0]);
}

TEST(Safetensors, ShardsAndIndex) {
  const std::string dir = scratch("shards");
  StTensorMap tensors;
  // 10 tensors of 40 bytes (F32 [10]), one oversized (400 bytes), shards of at most 100 bytes.
  for (int l = 0; l < 10; ++l)
    tensors[fmt::format("layers.{}.w", l)] = encode_tensor(random_tensor({10}, 10 + l), "F32");
  tensors["big"] = encode_tensor(random_tensor({100}, 99), "F32");
  const auto files = write_safetensors_sharded(dir, tensors, 100, {{"origin", "test"}});

  ASSERT_EQ(files.back(), "model.safetensors.index.json");
  const size_t shards = files.size() - 1;
  // Natural order: big, layers.0 .. layers.9 -> [big] [0,1] [2,3] ... [8,9] = 6 shards.
  EXPECT_EQ(shards, 6u);
  for (size_t i = 0; i < shards; ++i) {
    EXPECT_EQ(files[i], fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards));
    const StFile shard = read_safetensors(dir + "/" + files[i]);
    uint64_t bytes = 0;
    for (const auto& [name, t] : shard.tensors) bytes += t.data.size();
    if (!shard.tensors.count("big")) EXPECT_LE(bytes, 100u) << files[i];
    EXPECT_EQ(shard.metadata.at("format"), "pt");
  }
  const StFile second = read_safetensors(dir + "/" + files[2]);
  EXPECT_EQ(second.tensors.count("layers.2.w") + second.tensors.count("layers.3.w"), 2u)
      << "layers are sharded in numeric order";

  std::ifstream in(dir + "/model.safetensors.index.json");
  const auto index = nlohmann::json::parse(in);
  EXPECT_EQ(index["metadata"]["total_size"], 10 * 40 + 400);
  EXPECT_EQ(index["weight_map"].size(), tensors.size());
  EXPECT_EQ(index["weight_map"]["big"], files[0]);

  const StFile via_dir = read_safetensors_model(dir);
  EXPECT_EQ(via_dir.tensors, tensors);
  EXPECT_EQ(via_dir.metadata.at("origin"), "test");
  EXPECT_EQ(read_safetensors_model(dir + "/model.safetensors.index.json").tensors, tensors);

  // Everything within the limit: one model.safetensors, no index (as save_pretrained does).
  const std::string one = scratch("single");
  EXPECT_EQ(write_safetensors_sharded(one, tensors, 1 << 20),
            std::vector<std::string>{"model.safetensors"});
  EXPECT_FALSE(fs::exists(one + "/model.safetensors.index.json"));
  EXPECT_EQ(read_safetensors_model(one).tensors, tensors);
  EXPECT_EQ(read_safetensors_model(one + "/model.safetensors").tensors, tensors);

  // Saving a smaller model over the sharded one: the stale index must not shadow the new file.
  StTensorMap small;
  small["only"] = encode_tensor(random_tensor({2}, 3), "F32");
  write_safetensors_sharded(dir, small, 100);
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_EQ(read_safetensors_model(dir).tensors, small);
}

TEST(Safetensors, IndexMustMatchShards) {
  const std::string dir = scratch("bad_index");
  StTensorMap tensors;
  for (int l = 0; l < 3; ++l)
    tensors[fmt::format("t{}", l)] = encode_tensor(random_tensor({10}, l), "F32");
  write_safetensors_sharded(dir, tensors, 40);
  const std::string path = dir + "/model.safetensors.index.json";
  nlohmann::json index = nlohmann::json::parse(std::ifstream(path));

  nlohmann::json extra = index;
  extra["weight_map"]["ghost"] = "model-00001-of-00003.safetensors";
  std::ofstream(path) << extra.dump();
  try {
    read_safetensors_model(dir);
    ADD_FAILURE() << "accepted an index listing a tensor no shard holds";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'ghost'"), std::string::npos) << e.what();
  }

  nlohmann::json moved = index;
  moved["weight_map"]["t0"] = "model-00002-of-00003.safetensors";
  std::ofstream(path) << moved.dump();
  EXPECT_THROW(read_safetensors_model(dir), Error);

  std::ofstream(path) << "{\"weight_map\": ";
  EXPECT_THROW(read_safetensors_model(dir), Error);
  EXPECT_THROW(read_safetensors_model(scratch("empty_dir")), Error);
}

TEST(Safetensors, RejectsCorruptFiles) {
  const std::string dir = scratch("corrupt");
  // A valid file, then cut short by one byte: the buffer no longer matches the offsets.
  StTensorMap tensors;
  tensors["w"] = encode_tensor(random_tensor({4, 4}, 7), "F32");
  const std::string good = dir + "/good.safetensors";
  write_safetensors(good, tensors);
  std::vector<uint8_t> bytes = read_bytes(good);
  bytes.pop_back();
  write_bytes(good, bytes);
  EXPECT_NE(read_error(good).find("truncated"), std::string::npos);

  bytes.resize(5);  // not even the 8-byte length
  write_bytes(good, bytes);
  EXPECT_NE(read_error(good).find("too small"), std::string::npos);

  const std::string t8 = R"("dtype":"F32","shape":[2])";
  // Header length pointing past the end of the file.
  EXPECT_NE(read_error(write_raw(dir, "{}", 0, 4096)).find("past the end"), std::string::npos);
  // Header over the 100 MB limit.
  EXPECT_NE(read_error(write_raw(dir, "{}", 0, 200'000'000)).find("100 MB"), std::string::npos);
  // Not JSON.
  EXPECT_NE(read_error(write_raw(dir, "{\"a\": [1, 2", 0)).find("not valid JSON"),
            std::string::npos);
  // Not starting with '{'.
  EXPECT_NE(read_error(write_raw(dir, "[]", 0)).find("start"), std::string::npos);
  // Overlapping offsets: b starts inside a.
  std::string msg = read_error(write_raw(
      dir, "{\"a\":{" + t8 + ",\"data_offsets\":[0,8]},\"b\":{" + t8 + ",\"data_offsets\":[4,12]}}",
      12));
  EXPECT_NE(msg.find("'b'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("overlap"), std::string::npos) << msg;
  // A gap between tensors.
  msg = read_error(write_raw(
      dir,
      "{\"a\":{" + t8 + ",\"data_offsets\":[0,8]},\"b\":{" + t8 + ",\"data_offsets\":[12,20]}}",
      20));
  EXPECT_NE(msg.find("gap"), std::string::npos) << msg;
  // Byte size != numel * itemsize.
  msg = read_error(write_raw(dir, "{\"a\":{" + t8 + ",\"data_offsets\":[0,12]}}", 12));
  EXPECT_NE(msg.find("'a'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected numel * itemsize = 8"), std::string::npos) << msg;
  // Trailing bytes after the last tensor.
  msg = read_error(write_raw(dir, "{\"a\":{" + t8 + ",\"data_offsets\":[0,8]}}", 9));
  EXPECT_NE(msg.find("data buffer is 9 bytes"), std::string::npos) << msg;
  // Unknown dtype, named with the tensor.
  msg = read_error(write_raw(dir, R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8));
  EXPECT_NE(msg.find("unknown dtype 'F33'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'a'"), std::string::npos) << msg;
  // Missing fields; negative shape; non-string metadata.
  read_error(write_raw(dir, R"({"a":{"dtype":"F32","shape":[2]}})", 8));
  read_error(write_raw(dir, R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8));
  read_error(write_raw(dir, R"({"__metadata__":{"format":1}})", 0));
  // A shape whose byte size overflows 64 bits must not wrap around to a matching size.
  read_error(write_raw(
      dir, R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})", 0));
  // A dimension beyond int64 is refused even when another dimension makes the tensor empty.
  read_error(write_raw(
      dir, R"({"a":{"dtype":"F32","shape":[0,9223372036854775808],"data_offsets":[0,0]}})", 0));
  // The same hand-written layout with everything right is accepted (the helper is not at fault).
  EXPECT_EQ(read_safetensors(write_raw(dir, "{\"a\":{" + t8 + ",\"data_offsets\":[0,8]}}", 8))
                .tensors.at("a")
                .data.size(),
            8u);
}

TEST(Safetensors, WriterRejectsInconsistentTensors) {
  const std::string dir = scratch("writer");
  StTensorMap bad;
  bad["w"] = StTensor{"F32", {2, 3}, std::vector<uint8_t>(20)};
  EXPECT_THROW(write_safetensors(dir + "/x.safetensors", bad), Error);
  bad["w"] = StTensor{"F31", {1}, std::vector<uint8_t>(4)};
  EXPECT_THROW(write_safetensors(dir + "/x.safetensors", bad), Error);
  EXPECT_FALSE(fs::exists(dir + "/x.safetensors"));
}

// The bf16 value nearest to x (ties to even mantissa), by comparing both neighbours exactly.
uint16_t nearest_bf16(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint16_t lo = uint16_t(bits >> 16), hi = uint16_t(lo + 1);
  if ((bits & 0xFFFF) == 0) return lo;
  // lo truncates toward zero; hi is the next magnitude up (inf when lo is the largest finite).
  const long double dl = std::fabs((long double)x - bf16_to_float(lo));
  const float fh = bf16_to_float(hi);
  const long double dh =
      std::isinf(fh) ? std::fabs(std::ldexp((long double)1, 128) - std::fabs((long double)x))
                     : std::fabs((long double)fh - x);
  if (dl != dh) return dl < dh ? lo : hi;
  return (lo & 1) ? hi : lo;
}

TEST(Safetensors, Bf16RoundsToNearestEven) {
  EXPECT_EQ(bf16_bits(1.0f), 0x3F80);
  EXPECT_EQ(bf16_bits(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // tie, even below
  EXPECT_EQ(bf16_bits(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // tie, even above
  EXPECT_EQ(bf16_bits(std::bit_cast<float>(0x3F808001u)), 0x3F81);  // just above the tie
  EXPECT_EQ(bf16_bits(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(bf16_bits(std::numeric_limits<float>::max()), 0x7F80);  // rounds up to inf
  // A NaN whose payload is only in the low bits must not truncate to an infinity.
  for (uint32_t nan : {0x7F800001u, 0xFF800001u, 0x7FC00000u}) {
    const uint16_t b = bf16_bits(std::bit_cast<float>(nan));
    EXPECT_TRUE(std::isnan(bf16_to_float(b))) << std::hex << nan;
    EXPECT_EQ(b >> 15, nan >> 31) << "sign kept";
  }
  std::mt19937 rng(5);
  for (int i = 0; i < 200000; ++i) {
    const float x = std::bit_cast<float>(uint32_t(rng()));
    if (std::isnan(x)) continue;
    ASSERT_EQ(bf16_bits(x), nearest_bf16(x)) << std::hex << std::bit_cast<uint32_t>(x);
  }
  for (uint32_t b = 0; b < 0x10000; ++b) {  // every bf16 survives the trip through fp32
    if (std::isnan(bf16_to_float(uint16_t(b)))) continue;
    ASSERT_EQ(bf16_bits(bf16_to_float(uint16_t(b))), b);
  }
}

TEST(Safetensors, Fp16Decodes) {
  EXPECT_EQ(fp16_to_fp32(0x3C00), 1.0f);
  EXPECT_EQ(fp16_to_fp32(0xC000), -2.0f);
  EXPECT_EQ(fp16_to_fp32(0x7BFF), 65504.0f);
  EXPECT_EQ(fp16_to_fp32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(fp16_to_fp32(0x8000), 0.0f);
  EXPECT_TRUE(std::signbit(fp16_to_fp32(0x8000)));
  EXPECT_TRUE(std::isinf(fp16_to_fp32(0x7C00)));
  EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7E00)));
  StTensor t{"F16", {2}, {0x00, 0x3C, 0x00, 0xC0}};
  EXPECT_EQ(decode_tensor(t, "h").data, (std::vector<float>{1.0f, -2.0f}));
  EXPECT_THROW(decode_tensor(StTensor{"I32", {1}, std::vector<uint8_t>(4)}, "i"), Error);
}

}  // namespace
}  // namespace origami
