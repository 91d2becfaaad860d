// LSUN (the DCGAN paper's bedrooms, the PyTorch example's --dataset lsun): LMDB databases whose
// values are encoded images. See dataset.h.
#include <algorithm>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "gantry/data/dataset.h"
#include "gantry/data/image.h"

#if defined(GANTRY_HAVE_LMDB)
#include <lmdb.h>
#endif

namespace gantry::data {

namespace fs = std::filesystem;

std::vector<std::string> split_classes(const std::string& list) {
  std::vector<std::string> out;
  for (size_t at = 0; at <= list.size();) {
    const size_t comma = std::min(list.find(',', at), list.size());
    if (comma > at) out.push_back(list.substr(at, comma - at));
    at = comma + 1;
  }
  return out;
}

bool lsun_supported() {
#if defined(GANTRY_HAVE_LMDB)
  return true;
#else
  return false;
#endif
}

#if !defined(GANTRY_HAVE_LMDB)

struct Lsun::Db {};

Lsun::Lsun(const std::string& path, bool, const std::vector<std::string>&) {
  throw std::runtime_error("lsun " + path + ": this gantry was built without liblmdb, which reads LSUN's "
                           "databases (scripts/install-deps.sh installs liblmdb-dev; rebuild)");
}
Lsun::~Lsun() = default;
Example Lsun::get(size_t) const { return {}; }
std::string Lsun::source(size_t) const { return {}; }

#else

namespace {
[[noreturn]] void lmdb_fail(const std::string& where, const std::string& call, int rc) {
  throw std::runtime_error("lsun " + where + ": " + call + ": " + mdb_strerror(rc));
}
}  // namespace

// One class: an LMDB environment opened read-only, as torchvision opens it (no lock file, no
// readahead), and MDB_NOTLS so every loader thread can run its own read transaction.
struct Lsun::Db {
  std::string path;
  MDB_env* env = nullptr;
  MDB_dbi dbi = 0;
  ~Db() {
    if (env) mdb_env_close(env);
  }
};

Lsun::Lsun(const std::string& path, bool train, const std::vector<std::string>& classes) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw std::runtime_error("lsun " + path + ": no such file or directory");
  // The databases: `path` itself (it holds data.mdb), or the <category>_<split>_lmdb folders in
  // it (torchvision's root; the PyTorch example's --classes picks some).
  std::vector<std::pair<std::string, fs::path>> dbs;  // class name, folder
  const std::string split = train ? "_train" : "_val";
  if (fs::is_regular_file(fs::path(path) / "data.mdb", ec)) {
    std::string n = fs::path(path).filename().string();
    if (n.empty()) n = fs::path(path).parent_path().filename().string();
    if (n.size() > 5 && n.compare(n.size() - 5, 5, "_lmdb") == 0) n.resize(n.size() - 5);
    dbs.emplace_back(n, fs::path(path));
  } else if (!classes.empty()) {
    for (std::string c : classes) {
      if (c.find("_train") == std::string::npos && c.find("_val") == std::string::npos) c += split;
      const fs::path d = fs::path(path) / (c + "_lmdb");
      if (!fs::is_regular_file(d / "data.mdb", ec))
        throw std::runtime_error("lsun " + path + ": no " + (c + "_lmdb") + "/data.mdb for class '" + c +
                                 "' (LSUN's download unpacks each category to <category>_train_lmdb/)");
      dbs.emplace_back(c, d);
    }
  } else if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::directory_iterator(path, ec)) {
      const std::string n = e.path().filename().string();
      const std::string tail = split + "_lmdb";
      if (n.size() > tail.size() && n.compare(n.size() - tail.size(), tail.size(), tail) == 0 &&
          fs::is_regular_file(e.path() / "data.mdb", ec))
        dbs.emplace_back(n.substr(0, n.size() - 5), e.path());
    }
    std::sort(dbs.begin(), dbs.end());
  }
  if (dbs.empty())
    throw std::runtime_error("lsun " + path + ": no LSUN database here: expected an LMDB folder (holding data.mdb, "
                             "e.g. bedroom_train_lmdb/) or the folder holding <category>" + split + "_lmdb/ folders");

  for (const auto& [cls, dir] : dbs) {
    auto db = std::make_unique<Db>();
    db->path = dir.string();
    int rc = mdb_env_create(&db->env);
    if (rc) lmdb_fail(db->path, "mdb_env_create", rc);
    rc = mdb_env_open(db->env, db->path.c_str(), MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS | MDB_NORDAHEAD, 0444);
    if (rc) lmdb_fail(db->path, "opening the database", rc);
    MDB_txn* txn = nullptr;
    rc = mdb_txn_begin(db->env, nullptr, MDB_RDONLY, &txn);
    if (rc) lmdb_fail(db->path, "mdb_txn_begin", rc);
    rc = mdb_dbi_open(txn, nullptr, 0, &db->dbi);
    if (rc) {
      mdb_txn_abort(txn);
      lmdb_fail(db->path, "mdb_dbi_open", rc);
    }
    // Every key, once: the images are read by key in get(). Keys only: the values (the
    // images) are not touched, so this reads the B-tree's leaf pages, not the data.
    MDB_cursor* cur = nullptr;
    rc = mdb_cursor_open(txn, db->dbi, &cur);
    if (rc) {
      mdb_txn_abort(txn);
      lmdb_fail(db->path, "mdb_cursor_open", rc);
    }
    MDB_val k, v;
    const size_t before = labels_.size();
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      key_start_.push_back(keys_.size());
      keys_.insert(keys_.end(), static_cast<const char*>(k.mv_data), static_cast<const char*>(k.mv_data) + k.mv_size);
      labels_.push_back(static_cast<int64_t>(dbs_.size()));
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rc != MDB_NOTFOUND) lmdb_fail(db->path, "reading the keys", rc);
    if (labels_.size() == before) throw std::runtime_error("lsun " + db->path + ": the database holds no images");
    class_names_.push_back(cls);
    dbs_.push_back(std::move(db));
  }
  key_start_.push_back(keys_.size());
  name_ = "lsun " + path + " (" + std::to_string(labels_.size()) + " images, " + std::to_string(dbs_.size()) +
          " class" + (dbs_.size() == 1 ? "" : "es") + ")";
}

Lsun::~Lsun() = default;

std::string Lsun::source(size_t i) const {
  if (i >= labels_.size()) return {};
  return dbs_[static_cast<size_t>(labels_[i])]->path + " key " +
         std::string(keys_.data() + key_start_[i], key_start_[i + 1] - key_start_[i]);
}

Example Lsun::get(size_t i) const {
  if (i >= labels_.size())
    throw std::out_of_range("Lsun::get: index " + std::to_string(i) + " >= size " + std::to_string(labels_.size()));
  const Db& db = *dbs_[static_cast<size_t>(labels_[i])];
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(db.env, nullptr, MDB_RDONLY, &txn);
  if (rc) lmdb_fail(db.path, "mdb_txn_begin", rc);
  MDB_val k{key_start_[i + 1] - key_start_[i], const_cast<char*>(keys_.data() + key_start_[i])}, v;
  rc = mdb_get(txn, db.dbi, &k, &v);
  if (rc) {
    mdb_txn_abort(txn);
    lmdb_fail(source(i), "mdb_get", rc);
  }
  // Decoded straight from the memory map (JPEG in LSUN's release, WebP in some copies).
  Example ex;
  try {
    ex.image = decode_image(static_cast<const uint8_t*>(v.mv_data), v.mv_size, source(i));
  } catch (...) {
    mdb_txn_abort(txn);
    throw;
  }
  mdb_txn_abort(txn);
  ex.label = labels_[i];
  return ex;
}

#endif

}  // namespace gantry::data
