// defines: TensorOf<T>, Tensor (fp32), IndexTensor (int32)
// A shape plus shared ownership of memory from any allocator with allocate/deallocate (a Backend,
// so the memory lives on that backend's device). Views share the parent's storage: the model
// carves parameters and gradients out of one flat buffer each, allocated once (llm.c style).
#pragma once
#include <cstdint>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "tensor/dtype.h"

namespace origami {

inline int64_t numel_of(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
}

inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

template <typename T>
class TensorOf {
 public:
  TensorOf() = default;

  // Zero-initialised; the allocator (a Backend) must outlive the tensor. `dtype` is what the
  // values are stored as (tensor/dtype.h): an fp32 tensor may hold bf16 storage, whose every
  // value ops keep bf16-representable (the cpu reference), or which a device stores in 2 bytes.
  template <class Alloc>
  static TensorOf zeros(Alloc& alloc, std::vector<int64_t> shape, DType dtype = DType::f32) {
    TensorOf t;
    t.shape_ = std::move(shape);
    t.numel_ = numel_of(t.shape_);
    t.dtype_ = dtype;
    size_t bytes = size_t(std::max<int64_t>(t.numel_, 1)) * sizeof(T);
    Alloc* a = &alloc;
    t.data_ = std::shared_ptr<T>(static_cast<T*>(alloc.allocate_as(bytes, dtype)),
                                 [a](T* p) { a->deallocate(p); });
    return t;
  }

  // A view of numel_of(shape) elements starting at `offset`, sharing this tensor's storage.
  TensorOf view(int64_t offset, std::vector<int64_t> shape) const {
    TensorOf t;
    t.shape_ = std::move(shape);
    t.numel_ = numel_of(t.shape_);
    t.dtype_ = dtype_;
    t.data_ = std::shared_ptr<T>(data_, data_.get() + offset);
    return t;
  }

  T* data() const { return data_.get(); }
  int64_t numel() const { return numel_; }
  size_t bytes() const { return size_t(numel_) * sizeof(T); }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  bool empty() const { return !data_; }
  DType dtype() const { return dtype_; }

 private:
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::f32;
  std::shared_ptr<T> data_;
};

using Tensor = TensorOf<float>;
using IndexTensor = TensorOf<int32_t>;

}  // namespace origami
