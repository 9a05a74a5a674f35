// libarchive's functions, as imgtool uses them, loaded with dlopen on the
// first call instead of linked. libarchive pulls in libxml2 and ICU, whose
// loading and relocation cost every start of the binary about 3.5 ms of CPU:
// `imgtool run` and most other commands never touch a tar.
//
// Each function below has libarchive's own prototype (archive.h declares it,
// so the compiler checks that they agree) and forwards to the symbol of the
// same name in libarchive.so.13. A libarchive function that is not listed
// here is an undefined reference at link time: add it to the list.
#include <archive.h>
#include <archive_entry.h>

#include <cstdarg>
#include <cstdio>

#include "common/lazy_library.h"

namespace {
constexpr const char* kLibrary = "libarchive.so.13";
constexpr const char* kPackage = "libarchive13";
}  // namespace

#define IMGTOOL_ARCHIVE_FORWARD(ret, name, params, args) \
  IMGTOOL_LAZY_FORWARD(kLibrary, kPackage, ret, name, params, args)

using Entry = struct archive_entry;
using Archive = struct archive;

IMGTOOL_ARCHIVE_FORWARD(const char*, archive_version_string, (void), ())
IMGTOOL_ARCHIVE_FORWARD(int, archive_errno, (Archive * a), (a))
IMGTOOL_ARCHIVE_FORWARD(const char*, archive_error_string, (Archive * a), (a))

IMGTOOL_ARCHIVE_FORWARD(Archive*, archive_read_new, (void), ())
IMGTOOL_ARCHIVE_FORWARD(int, archive_read_free, (Archive * a), (a))
IMGTOOL_ARCHIVE_FORWARD(int, archive_read_support_filter_all, (Archive * a), (a))
IMGTOOL_ARCHIVE_FORWARD(int, archive_read_support_format_empty, (Archive * a), (a))
IMGTOOL_ARCHIVE_FORWARD(int, archive_read_support_format_raw, (Archive * a), (a))
IMGTOOL_ARCHIVE_FORWARD(int, archive_read_support_format_tar, (Archive * a), (a))
IMGTOOL_ARCHIVE_FORWARD(int, archive_read_open,
                        (Archive * a, void* data, archive_open_callback* open,
                         archive_read_callback* read, archive_close_callback* close),
                        (a, data, open, read, close))
IMGTOOL_ARCHIVE_FORWARD(int, archive_read_open_fd, (Archive * a, int fd, size_t block_size),
                        (a, fd, block_size))
IMGTOOL_ARCHIVE_FORWARD(int, archive_read_open_memory, (Archive * a, const void* buff, size_t size),
                        (a, buff, size))
IMGTOOL_ARCHIVE_FORWARD(int, archive_read_next_header, (Archive * a, Entry** entry), (a, entry))
IMGTOOL_ARCHIVE_FORWARD(la_ssize_t, archive_read_data, (Archive * a, void* buff, size_t size),
                        (a, buff, size))
IMGTOOL_ARCHIVE_FORWARD(int, archive_read_data_block,
                        (Archive * a, const void** buff, size_t* size, la_int64_t* offset),
                        (a, buff, size, offset))

IMGTOOL_ARCHIVE_FORWARD(Archive*, archive_write_new, (void), ())
IMGTOOL_ARCHIVE_FORWARD(int, archive_write_free, (Archive * a), (a))
IMGTOOL_ARCHIVE_FORWARD(int, archive_write_fail, (Archive * a), (a))
IMGTOOL_ARCHIVE_FORWARD(int, archive_write_close, (Archive * a), (a))
IMGTOOL_ARCHIVE_FORWARD(int, archive_write_add_filter_none, (Archive * a), (a))
IMGTOOL_ARCHIVE_FORWARD(int, archive_write_set_format_pax_restricted, (Archive * a), (a))
IMGTOOL_ARCHIVE_FORWARD(int, archive_write_set_bytes_in_last_block, (Archive * a, int bytes),
                        (a, bytes))
IMGTOOL_ARCHIVE_FORWARD(int, archive_write_open_fd, (Archive * a, int fd), (a, fd))
IMGTOOL_ARCHIVE_FORWARD(int, archive_write_open,
                        (Archive * a, void* data, archive_open_callback* open,
                         archive_write_callback* write, archive_close_callback* close),
                        (a, data, open, write, close))
IMGTOOL_ARCHIVE_FORWARD(int, archive_write_header, (Archive * a, Entry* entry), (a, entry))
IMGTOOL_ARCHIVE_FORWARD(la_ssize_t, archive_write_data, (Archive * a, const void* buff, size_t size),
                        (a, buff, size))
IMGTOOL_ARCHIVE_FORWARD(int, archive_write_finish_entry, (Archive * a), (a))

IMGTOOL_ARCHIVE_FORWARD(Entry*, archive_entry_new, (void), ())
IMGTOOL_ARCHIVE_FORWARD(void, archive_entry_free, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(time_t, archive_entry_atime, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(int, archive_entry_atime_is_set, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(long, archive_entry_atime_nsec, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(int, archive_entry_ctime_is_set, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(time_t, archive_entry_mtime, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(long, archive_entry_mtime_nsec, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(mode_t, archive_entry_filetype, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(mode_t, archive_entry_perm, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(la_int64_t, archive_entry_uid, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(la_int64_t, archive_entry_gid, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(const char*, archive_entry_uname, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(const char*, archive_entry_gname, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(la_int64_t, archive_entry_size, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(const char*, archive_entry_pathname, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(const char*, archive_entry_hardlink, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(const char*, archive_entry_symlink, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(dev_t, archive_entry_rdevmajor, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(dev_t, archive_entry_rdevminor, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(int, archive_entry_xattr_reset, (Entry * e), (e))
IMGTOOL_ARCHIVE_FORWARD(int, archive_entry_xattr_next,
                        (Entry * e, const char** name, const void** value, size_t* size),
                        (e, name, value, size))
IMGTOOL_ARCHIVE_FORWARD(void, archive_entry_set_filetype, (Entry * e, unsigned int type), (e, type))
IMGTOOL_ARCHIVE_FORWARD(void, archive_entry_set_perm, (Entry * e, mode_t perm), (e, perm))
IMGTOOL_ARCHIVE_FORWARD(void, archive_entry_set_uid, (Entry * e, la_int64_t uid), (e, uid))
IMGTOOL_ARCHIVE_FORWARD(void, archive_entry_set_gid, (Entry * e, la_int64_t gid), (e, gid))
IMGTOOL_ARCHIVE_FORWARD(void, archive_entry_set_size, (Entry * e, la_int64_t size), (e, size))
IMGTOOL_ARCHIVE_FORWARD(void, archive_entry_set_mtime, (Entry * e, time_t sec, long nsec),
                        (e, sec, nsec))
IMGTOOL_ARCHIVE_FORWARD(void, archive_entry_set_pathname, (Entry * e, const char* path), (e, path))
IMGTOOL_ARCHIVE_FORWARD(void, archive_entry_set_hardlink, (Entry * e, const char* target),
                        (e, target))
IMGTOOL_ARCHIVE_FORWARD(void, archive_entry_set_symlink, (Entry * e, const char* target),
                        (e, target))
IMGTOOL_ARCHIVE_FORWARD(void, archive_entry_set_rdevmajor, (Entry * e, dev_t major), (e, major))
IMGTOOL_ARCHIVE_FORWARD(void, archive_entry_set_rdevminor, (Entry * e, dev_t minor), (e, minor))

// Variadic: formatted here, handed over as a plain string.
extern "C" void archive_set_error(Archive* a, int err, const char* fmt, ...) {
  static const auto real =
      reinterpret_cast<void (*)(Archive*, int, const char*, ...)>(
          ::imgtool::LazySymbol(kLibrary, kPackage, "archive_set_error"));
  char message[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(message, sizeof(message), fmt, args);
  va_end(args);
  real(a, err, "%s", message);
}
