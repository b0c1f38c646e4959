// safetensors reading and writing (single file and sharded with an index) and the dtype
// conversions. Checks mirror safetensors/src/tensor.rs: header length within the file and
// under 100 MB, JSON starting with '{', known dtypes, data_offsets tiling the buffer in order
// with no gap or overlap, byte size == numel * itemsize, and the buffer ending at end of file.
#include "checkpoint/safetensors.h"

#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "base/error.h"

namespace origami {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian data; a big-endian host needs byte swaps here");

namespace fs = std::filesystem;

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference reader's MAX_HEADER_SIZE
const char* const kIndexName = "model.safetensors.index.json";
const char* const kSingleName = "model.safetensors";

const std::map<std::string, size_t>& dtype_sizes() {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
  return sizes;
}

std::string known_dtypes() {
  std::string s;
  for (const auto& [name, size] : dtype_sizes()) s += (s.empty() ? "" : " ") + name;
  return s;
}

// a*b for the non-negative sizes of a header, or false on overflow (a hostile header must not
// wrap around to a size that happens to match).
bool mul_ok(uint64_t a, uint64_t b, uint64_t& out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  out = a * b;
  return true;
}

uint64_t byte_size(const StTensor& t) { return uint64_t(numel(t.shape)) * dtype_size(t.dtype); }

void check_consistent(const std::string& name, const StTensor& t, const std::string& where) {
  for (int64_t d : t.shape)
    check(d >= 0, "{}: tensor '{}' has a negative dimension in shape {}", where, name,
          shape_str(t.shape));
  const uint64_t want = byte_size(t);
  check(t.data.size() == want,
        "{}: tensor '{}' ({} {}) holds {} bytes, expected numel * itemsize = {}", where, name,
        t.dtype, shape_str(t.shape), t.data.size(), want);
}

// "layers.10.x" after "layers.2.x": digit runs compare as numbers, so shards follow layer order.
bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(uint8_t(a[i])) && std::isdigit(uint8_t(b[j]))) {
      size_t ie = i, je = j;
      while (ie < a.size() && std::isdigit(uint8_t(a[ie]))) ++ie;
      while (je < b.size() && std::isdigit(uint8_t(b[je]))) ++je;
      std::string na = a.substr(i, ie - i), nb = b.substr(j, je - j);
      na.erase(0, std::min(na.find_first_not_of('0'), na.size()));
      nb.erase(0, std::min(nb.find_first_not_of('0'), nb.size()));
      if (na.size() != nb.size()) return na.size() < nb.size();
      if (na != nb) return na < nb;
      i = ie;
      j = je;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  if ((a.size() - i) != (b.size() - j)) return (a.size() - i) < (b.size() - j);
  return a < b;
}

void write_file_atomically(const std::string& path, const std::string& head,
                           const std::vector<const StTensor*>& body) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    check(bool(out), "safetensors: cannot open '{}' for writing: {}", tmp, std::strerror(errno));
    out.write(head.data(), std::streamsize(head.size()));
    for (const StTensor* t : body)
      out.write(reinterpret_cast<const char*>(t->data.data()), std::streamsize(t->data.size()));
    out.flush();
    check(bool(out), "safetensors: writing '{}' failed: {}", tmp, std::strerror(errno));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  check(!ec, "safetensors: cannot rename '{}' to '{}': {}", tmp, path, ec.message());
}

void write_index(const std::string& path, uint64_t total_size,
                 const std::map<std::string, std::string>& weight_map) {
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", total_size}};
  nlohmann::ordered_json wm = nlohmann::ordered_json::object();
  for (const auto& [name, file] : weight_map) wm[name] = file;  // std::map: sorted, as HF writes
  index["weight_map"] = wm;
  const std::string text = index.dump(2) + "\n";
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    check(bool(out), "safetensors: cannot open '{}' for writing: {}", tmp, std::strerror(errno));
    out << text;
    out.flush();
    check(bool(out), "safetensors: writing '{}' failed: {}", tmp, std::strerror(errno));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  check(!ec, "safetensors: cannot rename '{}' to '{}': {}", tmp, path, ec.message());
}

StFile read_index(const std::string& index_path) {
  std::ifstream in(index_path);
  check(bool(in), "safetensors index '{}': cannot open: {}", index_path, std::strerror(errno));
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("safetensors index '{}': invalid JSON: {}", index_path, e.what());
  }
  check(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
        "safetensors index '{}': expected an object with a \"weight_map\" object "
        "{{tensor name: file name}}",
        index_path);
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, file] : index["weight_map"].items()) {
    check(file.is_string(), "safetensors index '{}': weight_map entry '{}' is not a file name",
          index_path, name);
    weight_map[name] = file.get<std::string>();
  }
  check(!weight_map.empty(), "safetensors index '{}': weight_map is empty", index_path);
  std::set<std::string> files;
  for (const auto& [name, file] : weight_map) files.insert(file);

  const fs::path dir = fs::path(index_path).parent_path();
  StFile model;
  bool first = true;
  for (const std::string& file : files) {
    const std::string shard_path = (dir / file).string();
    StFile shard = read_safetensors(shard_path);
    if (first) model.metadata = shard.metadata;
    first = false;
    for (auto& [name, tensor] : shard.tensors) {
      auto it = weight_map.find(name);
      check(it != weight_map.end(),
            "safetensors index '{}': shard '{}' holds tensor '{}' that weight_map does not list",
            index_path, file, name);
      check(it->second == file,
            "safetensors index '{}': tensor '{}' is in shard '{}' but weight_map says '{}'",
            index_path, name, file, it->second);
      model.tensors.emplace(name, std::move(tensor));
    }
  }
  for (const auto& [name, file] : weight_map)
    check(model.tensors.count(name) == 1,
          "safetensors index '{}': weight_map lists tensor '{}' in '{}', which does not hold it",
          index_path, name, file);
  if (index.contains("metadata") && index["metadata"].contains("total_size")) {
    const auto& ts = index["metadata"]["total_size"];
    uint64_t total = 0;
    for (const auto& [name, t] : model.tensors) total += t.data.size();
    // Some writers store total_size as a float or string; only a number is checked.
    if (ts.is_number_unsigned())
      check(ts.get<uint64_t>() == total,
            "safetensors index '{}': metadata.total_size is {} but the shards hold {} bytes",
            index_path, ts.get<uint64_t>(), total);
  }
  return model;
}

}  // namespace

size_t dtype_size(const std::string& dtype) {
  auto it = dtype_sizes().find(dtype);
  check(it != dtype_sizes().end(), "safetensors: unknown dtype '{}' (known: {})", dtype,
        known_dtypes());
  return it->second;
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void write_safetensors(const std::string& path, const StTensorMap& tensors,
                       const StMetadata& metadata) {
  const std::string where = "safetensors '" + path + "'";
  // The reference writer's order: larger itemsize first (keeps every tensor aligned to its
  // itemsize given the 8-byte header padding), then by name.
  std::vector<std::pair<const std::string*, const StTensor*>> order;
  for (const auto& [name, t] : tensors) {
    dtype_size(t.dtype);
    check_consistent(name, t, where);
    order.emplace_back(&name, &t);
  }
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return dtype_size(a.second->dtype) > dtype_size(b.second->dtype);
  });

  nlohmann::ordered_json header;
  nlohmann::ordered_json meta = {{"format", "pt"}};
  for (const auto& [k, v] : metadata) meta[k] = v;
  header["__metadata__"] = meta;
  uint64_t offset = 0;
  std::vector<const StTensor*> body;
  for (const auto& [name, t] : order) {
    check(*name != "__metadata__", "{}: '__metadata__' is reserved and cannot name a tensor",
          where);
    const uint64_t end = offset + t->data.size();
    header[*name] = {{"dtype", t->dtype}, {"shape", t->shape}, {"data_offsets", {offset, end}}};
    offset = end;
    body.push_back(t);
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string head(8, '\0');
  const uint64_t n = json.size();
  std::memcpy(head.data(), &n, 8);
  write_file_atomically(path, head + json, body);
}

StFile read_safetensors(const std::string& path) {
  const std::string where = "safetensors '" + path + "'";
  std::error_code ec;
  const uint64_t file_size = fs::file_size(path, ec);
  check(!ec, "{}: cannot read: {}", where, ec.message());
  std::ifstream in(path, std::ios::binary);
  check(bool(in), "{}: cannot open: {}", where, std::strerror(errno));
  check(file_size >= 8, "{}: file is {} bytes, too small for the 8-byte header length", where,
        file_size);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  check(n <= kMaxHeaderBytes, "{}: header length {} exceeds the 100 MB limit", where, n);
  check(n <= file_size - 8,
        "{}: header length {} runs past the end of the {}-byte file (truncated?)", where, n,
        file_size);
  std::string text(n, '\0');
  in.read(text.data(), std::streamsize(n));
  check(bool(in), "{}: reading the {}-byte header failed", where, n);
  check(!text.empty() && text[0] == '{', "{}: header does not start with '{{'", where);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: header is not valid JSON: {}", where, e.what());
  }
  check(header.is_object(), "{}: header is not a JSON object", where);

  StFile file;
  struct Entry {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Entry> entries;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      check(info.is_object(), "{}: __metadata__ must be an object of strings", where);
      for (const auto& [k, v] : info.items()) {
        check(v.is_string(), "{}: __metadata__ entry '{}' is not a string", where, k);
        file.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    check(info.is_object() && info.contains("dtype") && info.contains("shape") &&
              info.contains("data_offsets"),
          "{}: tensor '{}' needs \"dtype\", \"shape\" and \"data_offsets\"", where, name);
    check(info["dtype"].is_string(), "{}: tensor '{}': dtype is not a string", where, name);
    StTensor t;
    t.dtype = info["dtype"].get<std::string>();
    check(dtype_sizes().count(t.dtype) == 1, "{}: tensor '{}' has unknown dtype '{}' (known: {})",
          where, name, t.dtype, known_dtypes());
    check(info["shape"].is_array(), "{}: tensor '{}': shape is not an array", where, name);
    uint64_t elements = 1;
    for (const auto& d : info["shape"]) {
      check(d.is_number_unsigned() && d.get<uint64_t>() <= uint64_t(INT64_MAX),
            "{}: tensor '{}': shape entry {} is not a non-negative integer", where, name, d.dump());
      check(mul_ok(elements, d.get<uint64_t>(), elements) && elements <= uint64_t(INT64_MAX),
            "{}: tensor '{}': shape {} overflows", where, name, info["shape"].dump());
      t.shape.push_back(d.get<int64_t>());
    }
    const auto& off = info["data_offsets"];
    check(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
              off[1].is_number_unsigned(),
          "{}: tensor '{}': data_offsets must be [begin, end] non-negative integers, got {}", where,
          name, off.dump());
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    uint64_t bytes = 0;
    check(mul_ok(elements, dtype_size(t.dtype), bytes), "{}: tensor '{}': byte size overflows",
          where, name);
    check(e >= b, "{}: tensor '{}': data_offsets [{}, {}] end before they begin", where, name, b,
          e);
    check(e - b == bytes,
          "{}: tensor '{}' ({} {}) spans {} bytes in data_offsets [{}, {}], expected numel * "
          "itemsize = {}",
          where, name, t.dtype, shape_str(t.shape), e - b, b, e, bytes);
    entries.push_back({b, e, name});
    file.tensors.emplace(name, std::move(t));
  }

  // The tensors must tile the buffer: sorted by offset, each begins where the previous ended.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  uint64_t expected = 0;
  std::string previous = "(start of buffer)";
  for (const Entry& en : entries) {
    check(en.begin == expected,
          "{}: tensor '{}' begins at byte {} but '{}' ends at {}: data_offsets must tile the "
          "buffer with no gap or overlap",
          where, en.name, en.begin, previous, expected);
    expected = en.end;
    previous = "'" + en.name + "'";
  }
  const uint64_t buffer = file_size - 8 - n;
  check(expected == buffer,
        "{}: tensors cover {} bytes but the data buffer is {} bytes (truncated or trailing data)",
        where, expected, buffer);

  for (const Entry& en : entries) {
    StTensor& t = file.tensors[en.name];
    t.data.resize(en.end - en.begin);
    in.seekg(std::streamoff(8 + n + en.begin));
    in.read(reinterpret_cast<char*>(t.data.data()), std::streamsize(t.data.size()));
    check(bool(in), "{}: reading tensor '{}' failed", where, en.name);
  }
  return file;
}

std::vector<std::string> write_safetensors_sharded(const std::string& dir,
                                                   const StTensorMap& tensors,
                                                   uint64_t max_shard_bytes,
                                                   const StMetadata& metadata) {
  check(max_shard_bytes > 0, "safetensors: max_shard_bytes must be positive");
  std::error_code ec;
  fs::create_directories(dir, ec);
  check(!ec, "safetensors: cannot create directory '{}': {}", dir, ec.message());

  std::vector<const std::string*> names;
  for (const auto& [name, t] : tensors) names.push_back(&name);
  std::sort(names.begin(), names.end(),
            [](const std::string* a, const std::string* b) { return natural_less(*a, *b); });
  // huggingface_hub's split_state_dict_into_shards: fill shards in order, start a new one when
  // the next tensor would overflow; an oversized tensor is alone in its shard.
  std::vector<StTensorMap> shards;
  uint64_t current = 0, total = 0;
  for (const std::string* name : names) {
    const StTensor& t = tensors.at(*name);
    const uint64_t size = t.data.size();
    total += size;
    if (shards.empty() || current + size > max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().emplace(*name, t);
    current += size;
  }
  if (shards.empty()) shards.emplace_back();

  if (shards.size() == 1) {
    write_safetensors((fs::path(dir) / kSingleName).string(), shards[0], metadata);
    // Readers prefer an index: a stale one from an earlier sharded save would shadow this file.
    fs::remove(fs::path(dir) / kIndexName, ec);
    return {kSingleName};
  }
  std::vector<std::string> files;
  std::map<std::string, std::string> weight_map;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file =
        fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    write_safetensors((fs::path(dir) / file).string(), shards[i], metadata);
    for (const auto& [name, t] : shards[i]) weight_map[name] = file;
    files.push_back(file);
  }
  // A stale single-file model next to the new index would be ambiguous to readers.
  fs::remove(fs::path(dir) / kSingleName, ec);
  write_index((fs::path(dir) / kIndexName).string(), total, weight_map);
  files.push_back(kIndexName);
  return files;
}

StFile read_safetensors_model(const std::string& path) {
  if (fs::is_directory(path)) {
    const fs::path index = fs::path(path) / kIndexName, single = fs::path(path) / kSingleName;
    if (fs::exists(index)) return read_index(index.string());
    check(fs::exists(single), "safetensors: directory '{}' has neither {} nor {}", path, kIndexName,
          kSingleName);
    return read_safetensors(single.string());
  }
  check(fs::exists(path), "safetensors: '{}' does not exist", path);
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) return read_index(path);
  return read_safetensors(path);
}

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  if (exp == 0x1F) return std::bit_cast<float>(sign | 0x7F800000 | (mant << 13));  // inf / NaN
  if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in fp32
    const float v = std::ldexp(float(mant), -24);
    return sign ? -v : v;
  }
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

StTensor encode_tensor(const HostTensor& t, const std::string& dtype) {
  check(size_t(numel(t.shape)) == t.data.size(), "encode_tensor: shape {} needs {} values, got {}",
        shape_str(t.shape), numel(t.shape), t.data.size());
  StTensor out{dtype, t.shape, {}};
  if (dtype == "F32") {
    out.data.resize(t.data.size() * 4);
    // An empty tensor has null data(); memcpy's arguments must not be null even for 0 bytes.
    if (!out.data.empty()) std::memcpy(out.data.data(), t.data.data(), out.data.size());
  } else if (dtype == "BF16") {
    out.data.resize(t.data.size() * 2);
    for (size_t i = 0; i < t.data.size(); ++i) {
      const uint16_t v = bf16_bits(t.data[i]);
      std::memcpy(out.data.data() + 2 * i, &v, 2);
    }
  } else {
    fail("encode_tensor: cannot write dtype '{}' (F32 or BF16)", dtype);
  }
  return out;
}

HostTensor decode_tensor(const StTensor& t, const std::string& name) {
  check_consistent(name, t, "decode_tensor");
  HostTensor out{t.shape, std::vector<float>(size_t(numel(t.shape)))};
  if (t.dtype == "F32") {
    // Empty tensors (a 0 in the shape) have null data(); see encode_tensor.
    if (!t.data.empty()) std::memcpy(out.data.data(), t.data.data(), t.data.size());
  } else if (t.dtype == "BF16" || t.dtype == "F16") {
    const bool bf = t.dtype == "BF16";
    for (size_t i = 0; i < out.data.size(); ++i) {
      uint16_t v;
      std::memcpy(&v, t.data.data() + 2 * i, 2);
      out.data[i] = bf ? bf16_to_float(v) : fp16_to_fp32(v);
    }
  } else {
    fail("decode_tensor: tensor '{}' has dtype '{}'; parameters must be F32, BF16 or F16", name,
         t.dtype);
  }
  return out;
}

StTensorMap encode_tensors(const HostTensorMap& tensors, const std::string& dtype) {
  StTensorMap out;
  for (const auto& [name, t] : tensors) {
    try {
      out.emplace(name, encode_tensor(t, dtype));
    } catch (const Error& e) {
      fail("tensor '{}': {}", name, e.what());
    }
  }
  return out;
}

HostTensorMap decode_tensors(const StTensorMap& tensors) {
  HostTensorMap out;
  for (const auto& [name, t] : tensors) out.emplace(name, decode_tensor(t, name));
  return out;
}

}  // namespace origami
