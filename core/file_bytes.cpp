// Whole-file reads and atomic writes. See file_bytes.h for the contract.
#include "gantry/core/file_bytes.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace gantry {

std::vector<uint8_t> read_file_bytes(const std::string& path, const std::string& who) {
  auto fail = [&](const std::string& problem) {
    throw std::runtime_error(who + " '" + path + "': " + problem);
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("not a regular file");
  }
  std::vector<uint8_t> bytes(static_cast<std::size_t>(st.st_size));
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int saved = errno;
      ::close(fd);
      fail(n == 0 ? "file shrank while being read"
                  : std::string("read failed: ") + std::strerror(saved));
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return bytes;
}

void write_file_atomic(const std::string& path, const uint8_t* data, std::size_t size,
                       const std::string& who) {
  auto sys_fail = [&](const std::string& what) {
    throw std::runtime_error(who + " '" + path + "': " + what + ": " + std::strerror(errno));
  };
  // The temporary sits next to the destination so that rename() stays within one file system
  // (and is therefore atomic).
  std::string tmpl = path + ".tmp-XXXXXX";
  std::vector<char> tmp(tmpl.begin(), tmpl.end());
  tmp.push_back('\0');
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) sys_fail("cannot create a temporary file next to it");
  const std::string tmp_path(tmp.data());
  auto cleanup_fail = [&](const std::string& what) {
    const int saved = errno;
    ::close(fd);
    ::unlink(tmp_path.c_str());
    errno = saved;
    sys_fail(what);
  };
  ::fchmod(fd, 0644);  // mkstemp makes 0600; a checkpoint is an ordinary file
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      cleanup_fail("write to " + tmp_path + " failed");
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) cleanup_fail("fsync of " + tmp_path + " failed");
  if (::close(fd) != 0) {
    const int saved = errno;
    ::unlink(tmp_path.c_str());
    errno = saved;
    sys_fail("close of " + tmp_path + " failed");
  }
  if (::rename(tmp_path.c_str(), path.c_str()) != 0) {
    const int saved = errno;
    ::unlink(tmp_path.c_str());
    errno = saved;
    sys_fail("rename from " + tmp_path + " failed");
  }
  // Make the rename itself durable (best effort: some file systems refuse to fsync a folder).
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace gantry
