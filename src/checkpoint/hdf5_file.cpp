// Hdf5File over the HDF5 C API: every call's status is checked and turned into an Error that
// names the file and dataset, with HDF5's own stderr printing silenced.
#include "checkpoint/hdf5_file.h"

#include <hdf5.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/error.h"

namespace origami {

namespace {

// Turn off HDF5's automatic error stack printing once: our Errors carry the context instead.
void quiet() {
  static const bool done = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

struct Id {  // closes an HDF5 object id with the matching close function
  hid_t id;
  herr_t (*close)(hid_t);
  ~Id() {
    if (id >= 0) close(id);
  }
};

// What the HDF5 error stack says went wrong underneath (the POSIX layer reports "errno = 28,
// error message = 'No space left on device'"), or errno's text, for a failure just seen.
std::string reason() {
  const int err = errno;
  std::string out;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
        auto& s = *static_cast<std::string*>(data);
        if (e->desc && std::string(e->desc).find("errno") != std::string::npos && s.empty())
          s = e->desc;
        return 0;
      },
      &out);
  H5Eclear2(H5E_DEFAULT);
  if (out.empty() && err != 0) out = std::strerror(err);
  return out.empty() ? "" : ": " + out;
}

hid_t link_creation_with_groups() {
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  return lcpl;
}

}  // namespace

Hdf5File Hdf5File::create(const std::string& path) {
  quiet();
  errno = 0;
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (id < 0) fail("cannot create HDF5 file '{}'{}", path, reason());
  return Hdf5File(id, path);
}

Hdf5File Hdf5File::open_read(const std::string& path) {
  quiet();
  // Reads are one pass over whole datasets: a small metadata cache is enough, and a load keeps
  // every rank file open at once (HDF5's default starts each file's cache at 2 MiB).
  Id fapl{H5Pcreate(H5P_FILE_ACCESS), H5Pclose};
  H5AC_cache_config_t mdc;
  mdc.version = H5AC__CURR_CACHE_CONFIG_VERSION;
  if (H5Pget_mdc_config(fapl.id, &mdc) >= 0) {
    mdc.set_initial_size = true;
    mdc.initial_size = 64 * 1024;
    mdc.min_size = 32 * 1024;
    mdc.max_size = std::max<size_t>(mdc.max_size, mdc.initial_size);
    H5Pset_mdc_config(fapl.id, &mdc);
  }
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.id);
  check(id >= 0, "cannot open HDF5 file '{}' (missing, truncated or not HDF5)", path);
  return Hdf5File(id, path);
}

Hdf5File::Hdf5File(Hdf5File&& o) noexcept : id_(o.id_), path_(std::move(o.path_)) { o.id_ = -1; }

Hdf5File& Hdf5File::operator=(Hdf5File&& o) noexcept {
  std::swap(id_, o.id_);
  std::swap(path_, o.path_);
  return *this;
}

Hdf5File::~Hdf5File() {
  if (id_ >= 0) H5Fclose(hid_t(id_));
}

void Hdf5File::close() {
  if (id_ < 0) return;
  errno = 0;
  const herr_t flushed = H5Fflush(hid_t(id_), H5F_SCOPE_LOCAL);
  const std::string why = flushed < 0 ? reason() : "";
  const herr_t closed = H5Fclose(hid_t(id_));
  id_ = -1;
  if (flushed < 0 || closed < 0)
    fail("{}: cannot finish writing the file{}", path_, why.empty() ? reason() : why);
}

void Hdf5File::write(const std::string& name, const std::vector<int64_t>& shape, const float* data) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  Id space{H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose};
  Id lcpl{link_creation_with_groups(), H5Pclose};
  Id ds{H5Dcreate2(hid_t(id_), name.c_str(), H5T_IEEE_F32LE, space.id, lcpl.id, H5P_DEFAULT,
                   H5P_DEFAULT),
        H5Dclose};
  if (ds.id < 0) fail("{}: cannot create dataset '{}'{}", path_, name, reason());
  errno = 0;
  if (H5Dwrite(ds.id, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    fail("{}: cannot write dataset '{}'{}", path_, name, reason());
}

void Hdf5File::set_attribute(const std::string& name, const std::string& attr,
                             const std::vector<int64_t>& v) {
  hsize_t n = v.size();
  Id space{H5Screate_simple(1, &n, nullptr), H5Sclose};
  Id a{H5Acreate_by_name(hid_t(id_), name.c_str(), attr.c_str(), H5T_STD_I64LE, space.id,
                         H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
       H5Aclose};
  check(a.id >= 0 && H5Awrite(a.id, H5T_NATIVE_INT64, v.data()) >= 0,
        "{}: cannot write attribute '{}' of '{}'", path_, attr, name);
}

bool Hdf5File::has(const std::string& name) const {
  // H5Lexists fails on a missing intermediate group; check each prefix in turn.
  for (size_t pos = name.find('/'); ; pos = name.find('/', pos + 1)) {
    const std::string prefix = name.substr(0, pos);
    if (H5Lexists(hid_t(id_), prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (pos == std::string::npos) return true;
  }
}

std::vector<int64_t> Hdf5File::shape(const std::string& name) const {
  check(has(name), "{}: no dataset '{}'", path_, name);
  Id ds{H5Dopen2(hid_t(id_), name.c_str(), H5P_DEFAULT), H5Dclose};
  Id space{H5Dget_space(ds.id), H5Sclose};
  const int nd = H5Sget_simple_extent_ndims(space.id);
  check(nd >= 0, "{}: dataset '{}' has no simple shape", path_, name);
  std::vector<hsize_t> dims(static_cast<size_t>(nd));
  H5Sget_simple_extent_dims(space.id, dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

std::vector<float> Hdf5File::read(const std::string& name) const {
  const auto dims = shape(name);
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  std::vector<float> out(static_cast<size_t>(n));
  Id ds{H5Dopen2(hid_t(id_), name.c_str(), H5P_DEFAULT), H5Dclose};
  check(H5Dread(ds.id, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) >= 0,
        "{}: cannot read dataset '{}' (file truncated or corrupted?)", path_, name);
  return out;
}

std::vector<int64_t> Hdf5File::attribute(const std::string& name, const std::string& attr) const {
  Id a{H5Aopen_by_name(hid_t(id_), name.c_str(), attr.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  check(a.id >= 0, "{}: dataset '{}' has no attribute '{}'", path_, name, attr);
  Id space{H5Aget_space(a.id), H5Sclose};
  std::vector<int64_t> v(size_t(H5Sget_simple_extent_npoints(space.id)));
  check(H5Aread(a.id, H5T_NATIVE_INT64, v.data()) >= 0, "{}: cannot read attribute '{}' of '{}'",
        path_, attr, name);
  return v;
}

}  // namespace origami
