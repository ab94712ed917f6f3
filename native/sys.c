/*
 * xfer native system calls: the ones Node.js lacks and a faithful copy needs (extended
 * attributes, FIFO and device nodes, nanosecond times of a symlink itself, an atomic
 * exchange of two paths, user and group names). The contract of every function is the
 * NativeSys interface in src/io/sys.ts, whose TypeScript twin gives the same results
 * (test/io-sys.test.ts compares the two).
 *
 * Rules shared by all of them:
 * - never follow a symlink in the last component (the l-variants, AT_SYMLINK_NOFOLLOW);
 * - a path is a JS string without NUL (a NUL would silently name another file: TypeError);
 * - a failing call throws an Error shaped like Node's own: .code = the errno name,
 *   .errno = -errno, .syscall, .path (.dest for two paths), message
 *   "ENOENT: no such file or directory, lsetxattr '/x'" (libuv's wording).
 * Linux only; elsewhere init_sys registers nothing and the twin serves.
 */
#define _GNU_SOURCE
#include "sys.h"

#ifdef __linux__

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pwd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#ifndef BLKGETSIZE64
#define BLKGETSIZE64 _IOR(0x12, 114, size_t) /* linux/fs.h */
#endif

#ifndef FICLONERANGE
/* linux/fs.h: struct file_clone_range and its ioctl (Linux 4.5) */
struct file_clone_range { int64_t src_fd; uint64_t src_offset; uint64_t src_length; uint64_t dest_offset; };
#define FICLONERANGE _IOW(0x94, 13, struct file_clone_range)
#endif

#ifndef FALLOC_FL_KEEP_SIZE
#define FALLOC_FL_KEEP_SIZE 0x01 /* linux/falloc.h */
#endif
#ifndef FALLOC_FL_PUNCH_HOLE
#define FALLOC_FL_PUNCH_HOLE 0x02
#endif

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1) /* linux/fs.h; glibc < 2.28 does not define it */
#endif

/* Linux caps one xattr value and a list of names at 64 KiB (XATTR_SIZE_MAX, XATTR_LIST_MAX);
 * a larger buffer is never needed, so a file whose xattrs keep growing between the size
 * query and the read is retried at most this many times before ERANGE is reported. */
#define XATTR_RETRIES 8
/* getpw*_r / getgr*_r buffers start at 1 KiB and double up to 1 MiB (a group with
 * thousands of members needs more than sysconf's hint). */
#define NSS_BUF_START_BYTES 1024
#define NSS_BUF_MAX_BYTES (1024 * 1024)

/* errno -> (name, libuv's message), so errors read exactly like Node's fs errors. */
static const struct { int no; const char *name; const char *msg; } ERRNOS[] = {
  { EPERM, "EPERM", "operation not permitted" },
  { ENOENT, "ENOENT", "no such file or directory" },
  { EIO, "EIO", "i/o error" },
  { E2BIG, "E2BIG", "argument list too long" },
  { EBADF, "EBADF", "bad file descriptor" },
  { EAGAIN, "EAGAIN", "resource temporarily unavailable" },
  { ENOMEM, "ENOMEM", "not enough memory" },
  { EACCES, "EACCES", "permission denied" },
  { EFAULT, "EFAULT", "bad address in system call argument" },
  { EBUSY, "EBUSY", "resource busy or locked" },
  { EEXIST, "EEXIST", "file already exists" },
  { EXDEV, "EXDEV", "cross-device link not permitted" },
  { ENODEV, "ENODEV", "no such device" },
  { ENOTDIR, "ENOTDIR", "not a directory" },
  { EISDIR, "EISDIR", "illegal operation on a directory" },
  { EINVAL, "EINVAL", "invalid argument" },
  { ENFILE, "ENFILE", "file table overflow" },
  { EMFILE, "EMFILE", "too many open files" },
  { ETXTBSY, "ETXTBSY", "text file is busy" },
  { EFBIG, "EFBIG", "file too large" },
  { ENOSPC, "ENOSPC", "no space left on device" },
  { EROFS, "EROFS", "read-only file system" },
  { EMLINK, "EMLINK", "too many links" },
  { ERANGE, "ERANGE", "result too large" },
  { ENAMETOOLONG, "ENAMETOOLONG", "name too long" },
  { ENOSYS, "ENOSYS", "function not implemented" },
  { ENOTEMPTY, "ENOTEMPTY", "directory not empty" },
  { ELOOP, "ELOOP", "too many symbolic links encountered" },
  { ENODATA, "ENODATA", "no data available" },
  { ENOTSUP, "ENOTSUP", "operation not supported on socket" }, /* == EOPNOTSUPP on Linux */
  { ENXIO, "ENXIO", "no such device or address" },
  { ENOTTY, "ENOTTY", "inappropriate ioctl for device" },
};

/* Throws the Node-style error for errno `no` from `syscall` on `path` (and `dest`, or NULL). */
static void throw_errno(napi_env env, int no, const char *syscall, const char *path, const char *dest) {
  const char *name = "UNKNOWN", *msg = "unknown error";
  for (size_t i = 0; i < sizeof ERRNOS / sizeof ERRNOS[0]; i++) {
    if (ERRNOS[i].no == no) { name = ERRNOS[i].name; msg = ERRNOS[i].msg; break; }
  }
  size_t cap = strlen(name) + strlen(msg) + strlen(syscall) + strlen(path) + (dest ? strlen(dest) : 0) + 32;
  char *text = malloc(cap);
  if (!text) { napi_throw_error(env, "ENOMEM", "ENOMEM: not enough memory"); return; }
  if (dest) snprintf(text, cap, "%s: %s, %s '%s' -> '%s'", name, msg, syscall, path, dest);
  else snprintf(text, cap, "%s: %s, %s '%s'", name, msg, syscall, path);
  napi_value code_v, msg_v, err, v;
  bool ok = napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code_v) == napi_ok
    && napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg_v) == napi_ok
    && napi_create_error(env, code_v, msg_v, &err) == napi_ok
    && napi_create_int32(env, -no, &v) == napi_ok && napi_set_named_property(env, err, "errno", v) == napi_ok
    && napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v) == napi_ok && napi_set_named_property(env, err, "syscall", v) == napi_ok
    && napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &v) == napi_ok && napi_set_named_property(env, err, "path", v) == napi_ok
    && (!dest || (napi_create_string_utf8(env, dest, NAPI_AUTO_LENGTH, &v) == napi_ok && napi_set_named_property(env, err, "dest", v) == napi_ok));
  free(text);
  if (ok) napi_throw(env, err);
  else napi_throw_error(env, name, msg);
}

/* throw_errno for a call on a descriptor: the error names it as "fd N". */
static void throw_fd_errno(napi_env env, int no, const char *syscall, int fd) {
  char path[32];
  snprintf(path, sizeof path, "fd %d", fd);
  throw_errno(env, no, syscall, path, NULL);
}

/* Throws a TypeError about the arguments and leaves the function through its cleanup. */
#define FAIL_ARGS(what) do { napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", what); goto done; } while (0)

/* A string argument as a malloc'ed C string (caller frees), or NULL with a TypeError thrown.
 * Rejects embedded NULs: the system call would otherwise act on a shorter path. */
static char *get_string(napi_env env, napi_value value, const char *what) {
  size_t len, got;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", what);
    return NULL;
  }
  char *s = malloc(len + 1);
  if (!s) { napi_throw_error(env, "ENOMEM", "ENOMEM: not enough memory"); return NULL; }
  napi_get_value_string_utf8(env, value, s, len + 1, &got);
  if (got != len || strlen(s) != len) {
    free(s);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "a path or name must be a string without null bytes");
    return NULL;
  }
  return s;
}

/* Reads the callback's arguments; exactly `want` of them, else a TypeError. */
static bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv, const char *fn) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != want) {
    char text[96];
    snprintf(text, sizeof text, "%s expects %zu arguments", fn, want);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", text);
    return false;
  }
  return true;
}

/* A 32-bit unsigned id (uid, gid, major, minor, mode): a number that is an integer in range. */
static bool get_u32(napi_env env, napi_value value, uint32_t *out) {
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok || d != d || d < 0 || d > 4294967295.0 || d != (double)(uint32_t)d) return false;
  *out = (uint32_t)d;
  return true;
}

/* A signed whole number of seconds (times before 1970 are negative). */
static bool get_i64(napi_env env, napi_value value, int64_t *out) {
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok || d != d || d < -9007199254740991.0 || d > 9007199254740991.0 || d != (double)(int64_t)d) return false;
  *out = (int64_t)d;
  return true;
}

/*
 * Reads a size-then-fill value (llistxattr or lgetxattr) into a malloc'ed buffer: asks the
 * size, allocates, reads; when the value grew in between (ERANGE) asks again. Returns the
 * length, or -1 with errno set; *out is NULL for an empty value.
 */
static ssize_t read_sized(const char *path, const char *name, char **out) {
  *out = NULL;
  for (int attempt = 0; attempt < XATTR_RETRIES; attempt++) {
    ssize_t size = name ? lgetxattr(path, name, NULL, 0) : llistxattr(path, NULL, 0);
    if (size <= 0) return size;
    char *buf = malloc((size_t)size);
    if (!buf) { errno = ENOMEM; return -1; }
    ssize_t got = name ? lgetxattr(path, name, buf, (size_t)size) : llistxattr(path, buf, (size_t)size);
    if (got >= 0) { *out = buf; return got; }
    int e = errno;
    free(buf);
    if (e != ERANGE) { errno = e; return -1; }
  }
  errno = ERANGE;
  return -1;
}

/* listXattrs(path) -> [{ name, value: Buffer }] in the kernel's order; [] without xattr support. */
static napi_value js_list_xattrs(napi_env env, napi_callback_info info) {
  napi_value argv[1], result = NULL;
  char *path = NULL, *names = NULL;
  if (!get_args(env, info, 1, argv, "listXattrs") || !(path = get_string(env, argv[0], "path must be a string"))) goto done;
  ssize_t len = read_sized(path, NULL, &names);
  if (len < 0 && (errno == ENOTSUP || errno == EOPNOTSUPP)) len = 0;
  else if (len < 0) { throw_errno(env, errno, "llistxattr", path, NULL); goto done; }
  napi_value arr;
  if (napi_create_array(env, &arr) != napi_ok) goto done;
  uint32_t count = 0;
  for (ssize_t at = 0; at < len;) {
    const char *name = names + at;
    size_t name_len = strnlen(name, (size_t)(len - at));
    at += (ssize_t)name_len + 1;
    if (name_len == 0) continue;
    char *value = NULL;
    ssize_t vlen = read_sized(path, name, &value);
    if (vlen < 0) {
      if (errno == ENODATA) continue; /* removed since the list was read: it is not there */
      throw_errno(env, errno, "lgetxattr", path, NULL);
      goto done;
    }
    napi_value entry, name_v, value_v;
    void *copy;
    bool ok = napi_create_object(env, &entry) == napi_ok
      && napi_create_string_utf8(env, name, name_len, &name_v) == napi_ok
      && napi_create_buffer_copy(env, (size_t)vlen, vlen ? value : "", &copy, &value_v) == napi_ok
      && napi_set_named_property(env, entry, "name", name_v) == napi_ok
      && napi_set_named_property(env, entry, "value", value_v) == napi_ok
      && napi_set_element(env, arr, count++, entry) == napi_ok;
    free(value);
    if (!ok) goto done;
  }
  result = arr;
done:
  free(names);
  free(path);
  return result;
}

/* setXattr(path, name, value: Uint8Array): lsetxattr, creating or replacing. */
static napi_value js_set_xattr(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char *path = NULL, *name = NULL;
  if (!get_args(env, info, 3, argv, "setXattr") || !(path = get_string(env, argv[0], "path must be a string"))
      || !(name = get_string(env, argv[1], "name must be a string"))) goto done;
  napi_typedarray_type type;
  size_t len, offset;
  void *data;
  napi_value ab;
  if (napi_get_typedarray_info(env, argv[2], &type, &len, &data, &ab, &offset) != napi_ok || type != napi_uint8_array)
    FAIL_ARGS("value must be a Buffer or Uint8Array");
  if (lsetxattr(path, name, len ? data : "", len, 0) != 0) throw_errno(env, errno, "lsetxattr", path, NULL);
done:
  free(name);
  free(path);
  return NULL;
}

/* removeXattr(path, name): lremovexattr. */
static napi_value js_remove_xattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char *path = NULL, *name = NULL;
  if (!get_args(env, info, 2, argv, "removeXattr") || !(path = get_string(env, argv[0], "path must be a string"))
      || !(name = get_string(env, argv[1], "name must be a string"))) goto done;
  if (lremovexattr(path, name) != 0) throw_errno(env, errno, "lremovexattr", path, NULL);
done:
  free(name);
  free(path);
  return NULL;
}

/*
 * mknod(path, type, mode, major, minor): type 0 = FIFO, 1 = char device, 2 = block device.
 * The node gets exactly `mode` (like `mknod -m`): mknod(2) masks it with the umask, so
 * when bits were masked they are set again through an O_PATH descriptor of the node just
 * made (never through a name that could have been swapped for a symlink meanwhile).
 */
static napi_value js_mknod(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  char *path = NULL;
  uint32_t type, mode, major, minor;
  if (!get_args(env, info, 5, argv, "mknod") || !(path = get_string(env, argv[0], "path must be a string"))) goto done;
  if (!get_u32(env, argv[1], &type) || type > 2 || !get_u32(env, argv[2], &mode) || mode > 07777
      || !get_u32(env, argv[3], &major) || !get_u32(env, argv[4], &minor))
    FAIL_ARGS("mknod: type must be 0..2, mode 0..0o7777, major and minor unsigned 32-bit integers");
  mode_t kind = type == 0 ? S_IFIFO : type == 1 ? S_IFCHR : S_IFBLK;
  if (mknod(path, kind | (mode_t)mode, type == 0 ? 0 : makedev(major, minor)) != 0) {
    throw_errno(env, errno, "mknod", path, NULL);
    goto done;
  }
  struct stat st;
  if (lstat(path, &st) != 0) { throw_errno(env, errno, "lstat", path, NULL); goto done; }
  if ((st.st_mode & 07777) != mode) {
    int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) { throw_errno(env, errno, "open", path, NULL); goto done; }
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    int rc = fstat(fd, &st), e = errno;
    if (rc == 0 && (st.st_mode & S_IFMT) != kind) { rc = -1; e = EEXIST; } /* replaced meanwhile: not ours */
    else if (rc == 0) { rc = chmod(proc, (mode_t)mode); e = errno; }
    close(fd);
    if (rc != 0) throw_errno(env, e, "chmod", path, NULL);
  }
done:
  free(path);
  return NULL;
}

/* lutimesNs(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec): utimensat, the link itself. */
static napi_value js_lutimes_ns(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  char *path = NULL;
  int64_t as, ms;
  uint32_t an, mn;
  if (!get_args(env, info, 5, argv, "lutimesNs") || !(path = get_string(env, argv[0], "path must be a string"))) goto done;
  if (!get_i64(env, argv[1], &as) || !get_u32(env, argv[2], &an) || an > 999999999
      || !get_i64(env, argv[3], &ms) || !get_u32(env, argv[4], &mn) || mn > 999999999)
    FAIL_ARGS("lutimesNs: seconds must be integers, nanoseconds integers in 0..999999999");
  struct timespec ts[2] = { { .tv_sec = (time_t)as, .tv_nsec = an }, { .tv_sec = (time_t)ms, .tv_nsec = mn } };
  if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) != 0) throw_errno(env, errno, "utimensat", path, NULL);
done:
  free(path);
  return NULL;
}

/* exchange(a, b): renameat2(RENAME_EXCHANGE) through syscall(2), so glibc < 2.28 builds it too. */
static napi_value js_exchange(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char *a = NULL, *b = NULL;
  if (!get_args(env, info, 2, argv, "exchange") || !(a = get_string(env, argv[0], "a must be a string"))
      || !(b = get_string(env, argv[1], "b must be a string"))) goto done;
#ifdef SYS_renameat2
  if (syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0) throw_errno(env, errno, "renameat2", a, b);
#else
  throw_errno(env, ENOSYS, "renameat2", a, b);
#endif
done:
  free(b);
  free(a);
  return NULL;
}

/* Which passwd/group lookup one of the four name functions does. */
typedef enum { USER_NAME, GROUP_NAME, USER_ID, GROUP_ID } lookup_t;

/*
 * One getpw*_r / getgr*_r lookup with a buffer that doubles on ERANGE. Returns the name
 * (string) or id (number), or null when there is no such entry: the functions report that
 * as 0 with no result, or (glibc, depending on the NSS module) ENOENT, ESRCH, EBADF or EPERM.
 */
static napi_value lookup(napi_env env, napi_callback_info info, lookup_t what) {
  static const char *const FNS[] = { "getpwuid_r", "getgrgid_r", "getpwnam_r", "getgrnam_r" };
  static const char *const JS_NAMES[] = { "userName", "groupName", "userId", "groupId" };
  napi_value argv[1], result = NULL;
  char *key = NULL, *buf = NULL;
  uint32_t id = 0;
  if (!get_args(env, info, 1, argv, JS_NAMES[what])) goto done;
  if (what == USER_ID || what == GROUP_ID) {
    if (!(key = get_string(env, argv[0], "name must be a string"))) goto done;
  } else if (!get_u32(env, argv[0], &id)) {
    FAIL_ARGS("id must be an unsigned 32-bit integer");
  }
  int rc = 0;
  bool found = false;
  const char *name = NULL;
  uint32_t found_id = 0;
  for (size_t cap = NSS_BUF_START_BYTES; cap <= NSS_BUF_MAX_BYTES; cap *= 2) {
    free(buf);
    if (!(buf = malloc(cap))) { rc = ENOMEM; break; }
    struct passwd pw, *pwp = NULL;
    struct group gr, *grp = NULL;
    switch (what) {
      case USER_NAME: rc = getpwuid_r((uid_t)id, &pw, buf, cap, &pwp); break;
      case USER_ID: rc = getpwnam_r(key, &pw, buf, cap, &pwp); break;
      case GROUP_NAME: rc = getgrgid_r((gid_t)id, &gr, buf, cap, &grp); break;
      case GROUP_ID: rc = getgrnam_r(key, &gr, buf, cap, &grp); break;
    }
    if (rc == ERANGE) continue;
    if (rc == 0 && pwp) { found = true; name = pwp->pw_name; found_id = (uint32_t)pwp->pw_uid; }
    if (rc == 0 && grp) { found = true; name = grp->gr_name; found_id = (uint32_t)grp->gr_gid; }
    break;
  }
  if (rc == ENOENT || rc == ESRCH || rc == EBADF || rc == EPERM) rc = 0;
  if (rc != 0) { throw_errno(env, rc, FNS[what], key ? key : "", NULL); goto done; }
  if (!found) napi_get_null(env, &result);
  else if (what == USER_NAME || what == GROUP_NAME) napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &result);
  else napi_create_uint32(env, found_id, &result);
done:
  free(buf);
  free(key);
  return result;
}

static napi_value js_user_name(napi_env env, napi_callback_info info) { return lookup(env, info, USER_NAME); }
static napi_value js_group_name(napi_env env, napi_callback_info info) { return lookup(env, info, GROUP_NAME); }
static napi_value js_user_id(napi_env env, napi_callback_info info) { return lookup(env, info, USER_ID); }
static napi_value js_group_id(napi_env env, napi_callback_info info) { return lookup(env, info, GROUP_ID); }

/* A file descriptor argument: a non-negative 32-bit integer. */
static bool get_fd(napi_env env, napi_value value, int *out) {
  uint32_t fd;
  if (!get_u32(env, value, &fd) || fd > INT32_MAX) return false;
  *out = (int)fd;
  return true;
}

/* A file offset: a non-negative integer a double holds exactly (< 2^53). */
static bool get_offset(napi_env env, napi_value value, off_t *out) {
  int64_t v;
  if (!get_i64(env, value, &v) || v < 0) return false;
  *out = (off_t)v;
  return true;
}

/*
 * seekData(fd, offset) / seekHole(fd, offset): lseek(SEEK_DATA / SEEK_HOLE). The first data
 * byte (or hole) at or after `offset`; -1 when there is no data from `offset` on (ENXIO: the
 * rest of the file is a hole, or offset is at or past its end). A file system without the
 * feature reports the whole file as data (the kernel's generic fallback does the same), and
 * so does a file that refuses the two (EINVAL: a block device).
 * The descriptor's file position changes: callers read with pread.
 */
static napi_value seek_whence(napi_env env, napi_callback_info info, int whence, const char *fn) {
  napi_value argv[2], result = NULL;
  int fd;
  off_t offset;
  if (!get_args(env, info, 2, argv, fn)) return NULL;
  if (!get_fd(env, argv[0], &fd) || !get_offset(env, argv[1], &offset)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "fd must be a descriptor, offset a non-negative integer");
    return NULL;
  }
  off_t at = lseek(fd, offset, whence);
  if (at < 0 && errno == EINVAL) {
    /* No SEEK_DATA/SEEK_HOLE for this file (a block device): all of it is data. */
    off_t end = lseek(fd, 0, SEEK_END);
    if (end >= 0) at = offset >= end ? -1 : whence == SEEK_DATA ? offset : end;
    else errno = EINVAL;
  }
  if (at < 0 && errno == ENXIO) at = -1;
  else if (at < 0) {
    throw_fd_errno(env, errno, "lseek", fd);
    return NULL;
  }
  napi_create_double(env, (double)at, &result);
  return result;
}

static napi_value js_seek_data(napi_env env, napi_callback_info info) { return seek_whence(env, info, SEEK_DATA, "seekData"); }
static napi_value js_seek_hole(napi_env env, napi_callback_info info) { return seek_whence(env, info, SEEK_HOLE, "seekHole"); }

/* blockDeviceSize(fd): ioctl(BLKGETSIZE64), the size in bytes of the block device open as fd. */
static napi_value js_block_device_size(napi_env env, napi_callback_info info) {
  napi_value argv[1], result = NULL;
  int fd;
  if (!get_args(env, info, 1, argv, "blockDeviceSize")) return NULL;
  if (!get_fd(env, argv[0], &fd)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "fd must be a descriptor");
    return NULL;
  }
  uint64_t bytes = 0;
  if (ioctl(fd, BLKGETSIZE64, &bytes) != 0) {
    throw_fd_errno(env, errno, "ioctl", fd);
    return NULL;
  }
  napi_create_double(env, (double)bytes, &result);
  return result;
}

/*
 * cloneRange(srcFd, destFd, offset, length): ioctl(destFd, FICLONERANGE) sharing the source's
 * blocks of [offset, offset + length) at the same offset of the destination (a reflink: XFS,
 * btrfs; nothing is copied or written). Offsets and length must be multiples of the file
 * system's block size (EINVAL otherwise); EOPNOTSUPP where the file system cannot share
 * blocks (ext4, tmpfs), EXDEV across file systems. Chosen over copy_file_range, which
 * reflinks on XFS and btrfs too but silently copies where it cannot: a caller must know
 * whether the blocks are shared, or it has written them twice.
 */
static napi_value js_clone_range(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int src, dest;
  off_t offset, length;
  if (!get_args(env, info, 4, argv, "cloneRange")) return NULL;
  if (!get_fd(env, argv[0], &src) || !get_fd(env, argv[1], &dest) || !get_offset(env, argv[2], &offset) || !get_offset(env, argv[3], &length)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "cloneRange: descriptors, then a non-negative offset and length");
    return NULL;
  }
  struct file_clone_range range = { .src_fd = src, .src_offset = (uint64_t)offset, .src_length = (uint64_t)length, .dest_offset = (uint64_t)offset };
  if (ioctl(dest, FICLONERANGE, &range) != 0) throw_fd_errno(env, errno, "ioctl FICLONERANGE", dest);
  return NULL;
}

/*
 * punchHole(fd, offset, length): fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE): the
 * range reads as zeros afterwards and its whole blocks are freed (partial blocks at either
 * end are zeroed by the file system); the size stays. EOPNOTSUPP where the file system
 * cannot punch.
 */
static napi_value js_punch_hole(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  off_t offset, length;
  if (!get_args(env, info, 3, argv, "punchHole")) return NULL;
  if (!get_fd(env, argv[0], &fd) || !get_offset(env, argv[1], &offset) || !get_offset(env, argv[2], &length)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "punchHole: a descriptor, then a non-negative offset and length");
    return NULL;
  }
  if (length > 0 && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0) throw_fd_errno(env, errno, "fallocate", fd);
  return NULL;
}

/*
 * residentBytes(fd, offset, length): how many bytes of [offset, offset + length) of the
 * file open as fd are in the page cache (mincore over a read-only shared mapping, whole
 * pages counted; the range is cut at the file's end). Advice for choosing buffered reads
 * over O_DIRECT, never for correctness. Throws the errno of mmap/mincore.
 */
#define RESIDENT_MAP_BYTES ((size_t)1 << 30)
static napi_value js_resident_bytes(napi_env env, napi_callback_info info) {
  napi_value argv[3], result = NULL;
  int fd;
  off_t offset, length;
  if (!get_args(env, info, 3, argv, "residentBytes")) return NULL;
  if (!get_fd(env, argv[0], &fd) || !get_offset(env, argv[1], &offset) || !get_offset(env, argv[2], &length)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "residentBytes: a descriptor, then a non-negative offset and length");
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    throw_fd_errno(env, errno, "fstat", fd);
    return NULL;
  }
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  off_t end = offset + length;
  if (end > st.st_size) end = st.st_size;
  off_t at = offset - (off_t)((size_t)offset % page);
  unsigned char *vec = NULL;
  double resident = 0;
  while (at < end) {
    size_t len = (size_t)(end - at) < RESIDENT_MAP_BYTES ? (size_t)(end - at) : RESIDENT_MAP_BYTES;
    size_t pages = (len + page - 1) / page;
    if (!vec) vec = malloc(RESIDENT_MAP_BYTES / page);
    if (!vec) {
      throw_fd_errno(env, ENOMEM, "residentBytes", fd);
      return NULL;
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, at);
    if (map == MAP_FAILED) {
      int e = errno;
      free(vec);
      throw_fd_errno(env, e, "mmap", fd);
      return NULL;
    }
    int ok = mincore(map, len, vec);
    int e = errno;
    munmap(map, len);
    if (ok != 0) {
      free(vec);
      throw_fd_errno(env, e, "mincore", fd);
      return NULL;
    }
    for (size_t i = 0; i < pages; i++) {
      if (!(vec[i] & 1)) continue;
      off_t from = at + (off_t)(i * page), to = from + (off_t)page;
      if (from < offset) from = offset;
      if (to > end) to = end;
      resident += (double)(to - from);
    }
    at += (off_t)len;
  }
  free(vec);
  napi_create_double(env, resident, &result);
  return result;
}

/*
 * mallocMmapThreshold(bytes): mallopt(M_MMAP_THRESHOLD, bytes) where the C library is glibc:
 * every allocation of at least `bytes` gets a mapping of its own, unmapped when freed, and
 * glibc's sliding threshold is off. Returns whether it was set (false elsewhere: musl has
 * no mallopt). Why: glibc raises the threshold to the size of each mapped block freed (up
 * to 32 MiB), so after the first 4 MiB Buffer is freed every later one comes from the
 * heap, and a heap keeps the pages of freed blocks that are not at its top.
 */
static napi_value js_malloc_mmap_threshold(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int64_t bytes;
  if (!get_args(env, info, 1, argv, "mallocMmapThreshold")) return NULL;
  if (napi_get_value_int64(env, argv[0], &bytes) != napi_ok || bytes <= 0 || bytes > INT_MAX) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "mallocMmapThreshold: a positive number of bytes");
    return NULL;
  }
  bool set = false;
#ifdef __GLIBC__
  set = mallopt(M_MMAP_THRESHOLD, (int)bytes) == 1;
#endif
  napi_value out;
  napi_get_boolean(env, set, &out);
  return out;
}

/*
 * hugeBuffer(bytes): an ArrayBuffer of `bytes` over an anonymous mapping of its own that
 * starts on a 2 MiB boundary, advised for transparent huge pages (MADV_HUGEPAGE: asked
 * for, the kernel may still give small pages), pooled or unmapped when the ArrayBuffer is
 * collected (below).
 * Why: a fresh page of a mapping costs a fault when first written, and on a virtual
 * machine a 4 KiB fault is dear: filling 256 MiB of fresh 8 MiB Buffers took 720-790 ms
 * on the project's 2-core VM with 4 KiB pages, 60-160 ms this way (THP in "madvise" mode;
 * io/sys.ts largeBuffer). The start
 * is aligned for O_DIRECT too. Throws the errno of mmap.
 */
#define HUGE_PAGE_BYTES ((size_t)2 << 20)
/*
 * Mappings of collected buffers are kept for the next hugeBuffer of the same length (any
 * thread's: the pool is the process's), at most HUGE_POOL_MAX_BYTES of them: their pages
 * are already faulted in, so a reused mapping costs no zeroing of fresh pages (a pull
 * served from read-ahead windows spent 13% of the server's CPU in the kernel's clear_page
 * on fresh 2 MiB pages, an incremental push 24%). Pooled mappings stay resident until
 * taken or trimmed: hugeBufferTrim(ms) unmaps those pooled longer than `ms`, which
 * io/sys.ts calls once its callers have been idle that long. 16 MiB: most buffers are
 * given back by their owners (io/sys.ts recycleLargeBuffer) before any collection, and
 * what is pooled here is resident memory nobody uses; 64 MiB (with 64 MiB given back
 * besides) put a server's peak over 300 MiB during a 64 GiB sparse push, with no less CPU.
 */
#define HUGE_POOL_MAX_BYTES ((size_t)16 << 20)
#define HUGE_POOL_SLOTS 64
struct huge_mapping {
  void *at;
  size_t length;
  uint64_t pooled_ms;
};
static pthread_mutex_t huge_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct huge_mapping huge_pool[HUGE_POOL_SLOTS];
static size_t huge_pool_count, huge_pool_bytes;
/* Counters for hugeBufferStats (tests, benchmarks): mappings made, reused, unmapped; bytes in buffers alive. */
static uint64_t huge_mapped, huge_reused, huge_unmapped, huge_live_bytes;

static uint64_t monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A pooled mapping of exactly `length` bytes (the most recently pooled: its pages are the likeliest cached), or NULL. */
static void *huge_pool_take(size_t length) {
  void *at = NULL;
  pthread_mutex_lock(&huge_pool_lock);
  for (size_t i = huge_pool_count; i-- > 0;) {
    if (huge_pool[i].length != length) continue;
    at = huge_pool[i].at;
    huge_pool[i] = huge_pool[--huge_pool_count];
    huge_pool_bytes -= length;
    huge_reused++;
    huge_live_bytes += length;
    break;
  }
  pthread_mutex_unlock(&huge_pool_lock);
  return at;
}

/* A collected buffer's mapping: into the pool if there is room, else unmapped. */
static void huge_pool_put(void *at, size_t length) {
  bool pooled = false;
  pthread_mutex_lock(&huge_pool_lock);
  huge_live_bytes -= length;
  if (huge_pool_count < HUGE_POOL_SLOTS && huge_pool_bytes + length <= HUGE_POOL_MAX_BYTES) {
    huge_pool[huge_pool_count++] = (struct huge_mapping){ at, length, monotonic_ms() };
    huge_pool_bytes += length;
    pooled = true;
  } else {
    huge_unmapped++;
  }
  pthread_mutex_unlock(&huge_pool_lock);
  if (!pooled) munmap(at, length);
}

static void huge_buffer_free(napi_env env, void *data, void *hint) {
  (void)data;
  struct huge_mapping *m = hint;
  int64_t adjusted;
  huge_pool_put(m->at, m->length);
  napi_adjust_external_memory(env, -(int64_t)m->length, &adjusted);
  free(m);
}
static napi_value js_huge_buffer(napi_env env, napi_callback_info info) {
  napi_value argv[1], out = NULL;
  int64_t bytes;
  if (!get_args(env, info, 1, argv, "hugeBuffer")) return NULL;
  if (napi_get_value_int64(env, argv[0], &bytes) != napi_ok || bytes <= 0 || bytes > ((int64_t)1 << 40)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "hugeBuffer: a positive number of bytes");
    return NULL;
  }
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  const size_t length = ((size_t)bytes + page - 1) / page * page;
  char *at = huge_pool_take(length);
  if (!at) {
    // Map a huge page more than asked, then give back the head before the first 2 MiB
    // boundary and whatever is left after the buffer.
    char *raw = mmap(NULL, length + HUGE_PAGE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
      throw_errno(env, errno, "mmap", NULL, NULL);
      return NULL;
    }
    at = (char *)(((uintptr_t)raw + HUGE_PAGE_BYTES - 1) & ~(uintptr_t)(HUGE_PAGE_BYTES - 1));
    if (at > raw) munmap(raw, (size_t)(at - raw));
    size_t tail = (size_t)(raw + length + HUGE_PAGE_BYTES - (at + length));
    if (tail > 0) munmap(at + length, tail);
#ifdef MADV_HUGEPAGE
    (void)madvise(at, length, MADV_HUGEPAGE); // advice: refused (no THP) leaves small pages
#endif
    pthread_mutex_lock(&huge_pool_lock);
    huge_mapped++;
    huge_live_bytes += length;
    pthread_mutex_unlock(&huge_pool_lock);
  }
  struct huge_mapping *m = malloc(sizeof *m);
  if (!m) {
    huge_pool_put(at, length);
    throw_errno(env, ENOMEM, "hugeBuffer", NULL, NULL);
    return NULL;
  }
  m->at = at;
  m->length = length;
  if (napi_create_external_arraybuffer(env, at, (size_t)bytes, huge_buffer_free, m, &out) != napi_ok) {
    huge_pool_put(at, length);
    free(m);
    napi_throw_error(env, "ERR_NATIVE", "hugeBuffer: napi_create_external_arraybuffer failed");
    return NULL;
  }
  int64_t adjusted;
  napi_adjust_external_memory(env, (int64_t)length, &adjusted);
  return out;
}

/*
 * hugeBufferTrim(ms): unmaps the pooled mappings that have waited in the pool `ms` or
 * longer; returns the bytes still pooled plus those of hugeBuffers alive (0: nothing left
 * that a later trim could release).
 */
static napi_value js_huge_buffer_trim(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  int64_t ms;
  if (!get_args(env, info, 1, argv, "hugeBufferTrim")) return NULL;
  if (napi_get_value_int64(env, argv[0], &ms) != napi_ok || ms < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "hugeBufferTrim: a number of milliseconds, 0 or more");
    return NULL;
  }
  struct huge_mapping old[HUGE_POOL_SLOTS];
  size_t n = 0;
  const uint64_t now = monotonic_ms();
  pthread_mutex_lock(&huge_pool_lock);
  for (size_t i = 0; i < huge_pool_count;) {
    if (now - huge_pool[i].pooled_ms >= (uint64_t)ms) {
      old[n++] = huge_pool[i];
      huge_pool_bytes -= huge_pool[i].length;
      huge_pool[i] = huge_pool[--huge_pool_count];
      huge_unmapped++;
    } else {
      i++;
    }
  }
  const double left = (double)(huge_pool_bytes + huge_live_bytes);
  pthread_mutex_unlock(&huge_pool_lock);
  for (size_t i = 0; i < n; i++) munmap(old[i].at, old[i].length);
  napi_create_double(env, left, &out);
  return out;
}

/*
 * hugeBufferDiscard(arrayBuffer): gives the pages of a hugeBuffer back to the system
 * (madvise MADV_DONTNEED) while the mapping stays: its next use faults in fresh zeroed
 * pages. Only for a buffer nobody uses (io/sys.ts: recycled buffers that waited idle).
 */
static napi_value js_huge_buffer_discard(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  void *data = NULL;
  size_t length = 0;
  if (!get_args(env, info, 1, argv, "hugeBufferDiscard")) return NULL;
  if (napi_get_arraybuffer_info(env, argv[0], &data, &length) != napi_ok || data == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "hugeBufferDiscard: an ArrayBuffer of hugeBuffer");
    return NULL;
  }
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if ((uintptr_t)data % page == 0) (void)madvise(data, (length + page - 1) / page * page, MADV_DONTNEED);
  return NULL;
}

/* hugeBufferStats(): { mapped, reused, unmapped, pooledBytes, liveBytes } since the process started, and poolMaxBytes. */
static napi_value js_huge_buffer_stats(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out, v;
  pthread_mutex_lock(&huge_pool_lock);
  const double fields[] = { (double)huge_mapped, (double)huge_reused, (double)huge_unmapped, (double)huge_pool_bytes, (double)huge_live_bytes, (double)HUGE_POOL_MAX_BYTES };
  pthread_mutex_unlock(&huge_pool_lock);
  static const char *const NAMES[] = { "mapped", "reused", "unmapped", "pooledBytes", "liveBytes", "poolMaxBytes" };
  napi_create_object(env, &out);
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    napi_create_double(env, fields[i], &v);
    napi_set_named_property(env, out, NAMES[i], v);
  }
  return out;
}

napi_status init_sys(napi_env env, napi_value exports) {
  static const struct { const char *name; napi_callback fn; } FNS[] = {
    { "listXattrs", js_list_xattrs }, { "setXattr", js_set_xattr }, { "removeXattr", js_remove_xattr },
    { "mknod", js_mknod }, { "lutimesNs", js_lutimes_ns }, { "exchange", js_exchange },
    { "userName", js_user_name }, { "groupName", js_group_name }, { "userId", js_user_id }, { "groupId", js_group_id },
    { "seekData", js_seek_data }, { "seekHole", js_seek_hole }, { "blockDeviceSize", js_block_device_size },
    { "cloneRange", js_clone_range }, { "punchHole", js_punch_hole }, { "residentBytes", js_resident_bytes },
    { "mallocMmapThreshold", js_malloc_mmap_threshold }, { "hugeBuffer", js_huge_buffer },
    { "hugeBufferTrim", js_huge_buffer_trim }, { "hugeBufferStats", js_huge_buffer_stats },
    { "hugeBufferDiscard", js_huge_buffer_discard },
  };
  for (size_t i = 0; i < sizeof FNS / sizeof FNS[0]; i++) {
    napi_value fn;
    napi_status s = napi_create_function(env, FNS[i].name, NAPI_AUTO_LENGTH, FNS[i].fn, NULL, &fn);
    if (s == napi_ok) s = napi_set_named_property(env, exports, FNS[i].name, fn);
    if (s != napi_ok) return s;
  }
  return napi_ok;
}

#else /* not Linux: the TypeScript twin in src/io/sys.ts serves */

napi_status init_sys(napi_env env, napi_value exports) {
  (void)env;
  (void)exports;
  return napi_ok;
}

#endif
