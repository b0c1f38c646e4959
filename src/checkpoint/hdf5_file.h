// defines: Hdf5File (a thin RAII wrapper over the HDF5 C API for fp32 datasets and attributes)
// Only what checkpoints need: create/open a file, write a whole fp32 dataset with int64 array
// attributes, read a whole dataset back, list and query datasets. HDF5's own error printing is
// silenced; every failure is an Error naming the file and the dataset.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace origami {

class Hdf5File {
 public:
  static Hdf5File create(const std::string& path);   // truncates
  static Hdf5File open_read(const std::string& path);
  Hdf5File(Hdf5File&& other) noexcept;
  Hdf5File& operator=(Hdf5File&& other) noexcept;
  ~Hdf5File();
  // Flushes and closes, checked (the destructor closes silently): a written file's last data may
  // only reach the disk here, so a full disk shows up here. Errors carry the OS reason.
  void close();

  // Dataset at `name` ("model/layers.0.attention.q.weight"; intermediate groups created).
  void write(const std::string& name, const std::vector<int64_t>& shape, const float* data);
  void set_attribute(const std::string& name, const std::string& attr, const std::vector<int64_t>& v);
  bool has(const std::string& name) const;
  std::vector<int64_t> shape(const std::string& name) const;
  std::vector<float> read(const std::string& name) const;
  std::vector<int64_t> attribute(const std::string& name, const std::string& attr) const;
  const std::string& path() const { return path_; }

 private:
  Hdf5File(long long id, std::string path) : id_(id), path_(std::move(path)) {}
  long long id_ = -1;  // hid_t
  std::string path_;
};

}  // namespace origami
