// defines: StTensor, StFile, write_safetensors(), read_safetensors(), write_safetensors_sharded(),
//          read_safetensors_model(), HostTensor <-> StTensor
// The Hugging Face safetensors format (formats.md §2): u64 LE header length N, N bytes of JSON
// padded with spaces to a multiple of 8, then the little-endian row-major byte buffer. The reader
// validates what the reference reader (safetensors/src/tensor.rs) validates, so a file we accept
// loads in transformers and a file we write is one it accepts.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tensor/dtype.h"   // bf16_bits, bf16_to_float
#include "tensor/tensor.h"  // shape_str

namespace origami {

// One tensor as stored: dtype is a safetensors dtype name ("F32", "BF16", ...), data its raw
// little-endian bytes (numel * dtype_size(dtype) of them).
struct StTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
  friend bool operator==(const StTensor&, const StTensor&) = default;
};

// A full global tensor in fp32, the in-memory form conversions work on.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
  friend bool operator==(const HostTensor&, const HostTensor&) = default;
};

using StTensorMap = std::map<std::string, StTensor>;
using HostTensorMap = std::map<std::string, HostTensor>;
using StMetadata = std::map<std::string, std::string>;

struct StFile {
  StTensorMap tensors;
  StMetadata metadata;  // "__metadata__" as read (includes "format")
};

// Bytes per element of a safetensors dtype; throws naming the dtype and the allowed ones.
size_t dtype_size(const std::string& dtype);
int64_t numel(const std::vector<int64_t>& shape);

// Writes one file: "__metadata__" = {"format":"pt"} plus `metadata`, tensors laid out as the
// reference writer does (larger dtypes first, then by name). Written to path + ".tmp", then
// renamed, so a crash never leaves a half-written file under the final name.
void write_safetensors(const std::string& path, const StTensorMap& tensors,
                       const StMetadata& metadata = {});
StFile read_safetensors(const std::string& path);

// Writes `tensors` into `dir` as transformers' save_pretrained does: one model.safetensors when
// everything fits in max_shard_bytes, else model-0000i-of-0000K.safetensors files (tensors in
// natural name order, layers.2 before layers.10; a tensor larger than the limit gets a shard of
// its own) plus model.safetensors.index.json {"metadata":{"total_size":B},"weight_map":{...}}.
// Returns the file names written (without dir).
std::vector<std::string> write_safetensors_sharded(const std::string& dir,
                                                   const StTensorMap& tensors,
                                                   uint64_t max_shard_bytes,
                                                   const StMetadata& metadata = {});
// Reads a model from a directory (index json, else model.safetensors), an index .json file or a
// single .safetensors file. With an index, every listed tensor must be in the file it names and
// every tensor of those files must be listed. Metadata is the first shard's.
StFile read_safetensors_model(const std::string& path);

// fp32 <-> bf16: tensor/dtype.h (bf16_bits, round to nearest even; bf16_to_float).
float fp16_to_fp32(uint16_t x);

// fp32 values -> stored tensor of dtype "F32" or "BF16".
StTensor encode_tensor(const HostTensor& t, const std::string& dtype);
// Stored "F32", "BF16" or "F16" tensor -> fp32; `name` is for the error on other dtypes.
HostTensor decode_tensor(const StTensor& t, const std::string& name);
StTensorMap encode_tensors(const HostTensorMap& tensors, const std::string& dtype);
HostTensorMap decode_tensors(const StTensorMap& tensors);

}  // namespace origami
