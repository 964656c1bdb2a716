// Syscalls Node lacks: xattrs that do not follow symlinks, mknod, renameat2, syncfs, flock, a
// lease probe, mount/umount2 and the new mount API (fsopen, fsconfig, fsmount, move_mount,
// open_tree). Every binding checks its arguments (TypeError/RangeError, like Node's own
// validators), makes the call, and on failure throws an Error shaped like Node's fs errors:
//   err.code 'ENODATA', err.errno -61, err.syscall 'lgetxattr', err.path '/x' (and err.dest),
//   message "ENODATA: no data available, lgetxattr '/x'".
// Paths, xattr names and mount strings are JS strings (encoded as UTF-8) or Buffers (raw bytes, so
// names that are not UTF-8 survive). err.path is the value the caller passed, string or Buffer.
// fsconfig and fsmount failures also carry the kernel's own words, when it left any on the fs
// context: "EINVAL: invalid argument, fsconfig 'redirect_dir' (overlay: Bad value for 'redirect_dir')".
#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <uv.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
#ifndef RENAME_WHITEOUT
#define RENAME_WHITEOUT (1 << 2)
#endif
#ifndef MS_NOSYMFOLLOW
#define MS_NOSYMFOLLOW 256
#endif
// glibc 2.36 (Debian 12) predates these; the values are the kernel's (linux/mount.h, 6.5+).
#ifndef MOVE_MOUNT_BENEATH
#define MOVE_MOUNT_BENEATH 0x00000200
#endif

// A value (or the name list) can grow between the size probe and the read, which then fails with
// ERANGE. Re-probing alone can lose to a busy writer many times in a row, so each retry also at
// least doubles the buffer: once it reaches the VFS limit (64 KiB for values and lists) the read
// cannot fail with ERANGE. The retry count is only a backstop.
#define XATTR_RETRIES 32
#define XATTR_VFS_MAX 65536

#define MAX_ARGS 6

// ---- errors -------------------------------------------------------------------------------------

// Name and message for an errno, matching what Node prints (libuv's table, which Node uses for its
// own fs errors); errnos libuv does not know fall back to glibc's names.
static void errno_text(int err, const char **name, const char **text, char *buf, size_t buflen) {
  switch (-err) {
#define XX(code, msg)  \
  case UV_##code:      \
    *name = #code;     \
    *text = msg;       \
    return;
    UV_ERRNO_MAP(XX)
#undef XX
  default:
    break;
  }
  const char *n = strerrorname_np(err);
  *name = n ? n : "UNKNOWN";
  const char *s = strerror_r(err, buf, buflen);
  if (s != buf) snprintf(buf, buflen, "%s", s);
  if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z')) buf[0] += 'a' - 'A';
  *text = buf;
}

// Builds (does not throw) the Node-style error. label is what the message names the call by (the
// syscall unless given); path/dest are C strings for the message and the caller's JS values for
// err.path/err.dest; detail is appended in parentheses. Any of them may be NULL.
static napi_value build_error(napi_env env, int err, const char *syscall, const char *label, const char *path,
                              napi_value path_v, const char *dest, napi_value dest_v, const char *detail) {
  const char *name, *text;
  char textbuf[128];
  errno_text(err, &name, &text, textbuf, sizeof textbuf);
  if (!label) label = syscall;

  size_t len = strlen(name) + strlen(text) + strlen(label) + 20 + (path ? strlen(path) : 0) + (dest ? strlen(dest) : 0) +
               (detail ? strlen(detail) : 0);
  char *msg = malloc(len);
  if (!msg) return NULL;
  int n = snprintf(msg, len, "%s: %s, %s", name, text, label);
  if (path) n += snprintf(msg + n, len - n, " '%s'", path);
  if (dest) n += snprintf(msg + n, len - n, " -> '%s'", dest);
  if (detail) snprintf(msg + n, len - n, " (%s)", detail);

  napi_value code_v, msg_v, error = NULL, v;
  bool ok = napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code_v) == napi_ok &&
            napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &msg_v) == napi_ok &&
            napi_create_error(env, code_v, msg_v, &error) == napi_ok &&
            napi_create_int32(env, -err, &v) == napi_ok && napi_set_named_property(env, error, "errno", v) == napi_ok &&
            napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v) == napi_ok &&
            napi_set_named_property(env, error, "syscall", v) == napi_ok &&
            (!path_v || napi_set_named_property(env, error, "path", path_v) == napi_ok) &&
            (!dest_v || napi_set_named_property(env, error, "dest", dest_v) == napi_ok);
  free(msg);
  return ok ? error : NULL;
}

napi_value sys_error(napi_env env, int err, const char *syscall, const char *path, napi_value path_v,
                     const char *dest, napi_value dest_v) {
  return build_error(env, err, syscall, NULL, path, path_v, dest, dest_v, NULL);
}

static void throw_sys(napi_env env, int err, const char *syscall, const char *path, napi_value path_v,
                      const char *dest, napi_value dest_v) {
  napi_value error = sys_error(env, err, syscall, path, path_v, dest, dest_v);
  if (error) napi_throw(env, error);
}

static const char *type_name(napi_env env, napi_value v) {
  napi_valuetype t = napi_undefined;
  napi_typeof(env, v, &t);
  switch (t) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "boolean";
    case napi_number: return "number";
    case napi_string: return "string";
    case napi_symbol: return "symbol";
    case napi_function: return "function";
    case napi_bigint: return "bigint";
    default: return "object";
  }
}

// Throws TypeError/RangeError with Node's codes (ERR_INVALID_ARG_TYPE, ...); always returns false.
static bool throw_arg(napi_env env, bool range, const char *code, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (range) napi_throw_range_error(env, code, msg);
  else napi_throw_type_error(env, code, msg);
  return false;
}

// ---- arguments ----------------------------------------------------------------------------------

static bool get_args(napi_env env, napi_callback_info info, napi_value *argv) {
  size_t argc = MAX_ARGS;
  return napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok;  // missing ones are undefined
}

static bool is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && (t == napi_undefined || t == napi_null);
}

// A string (UTF-8) or Buffer/Uint8Array (raw bytes) as a malloc'd NUL-terminated C string.
// nullable: null/undefined give *out = NULL. binary: NUL bytes inside are kept (mount data), else
// they are rejected, since the kernel would silently cut the name there.
static bool get_bytes(napi_env env, napi_value v, const char *what, bool nullable, bool binary, char **out, size_t *out_len) {
  *out = NULL;
  if (out_len) *out_len = 0;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  if (nullable && (t == napi_undefined || t == napi_null)) return true;

  char *s = NULL;
  size_t len = 0;
  bool is_buffer = false;
  if (t == napi_string) {
    if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return false;
    if (!(s = malloc(len + 1))) return throw_arg(env, true, "ERR_OUT_OF_MEMORY", "out of memory");
    if (napi_get_value_string_utf8(env, v, s, len + 1, &len) != napi_ok) goto fail;
  } else if (t == napi_object && napi_is_buffer(env, v, &is_buffer) == napi_ok && is_buffer) {
    void *data;
    if (napi_get_buffer_info(env, v, &data, &len) != napi_ok) return false;
    if (!(s = malloc(len + 1))) return throw_arg(env, true, "ERR_OUT_OF_MEMORY", "out of memory");
    if (len) memcpy(s, data, len);
    s[len] = '\0';
  } else {
    return throw_arg(env, false, "ERR_INVALID_ARG_TYPE", "The \"%s\" argument must be of type string%s or an instance of Buffer. Received %s",
                     what, nullable ? ", null" : "", type_name(env, v));
  }
  if (!binary && strlen(s) != len) {
    throw_arg(env, false, "ERR_INVALID_ARG_VALUE", "The \"%s\" argument must not contain null bytes", what);
    goto fail;
  }
  *out = s;
  if (out_len) *out_len = len;
  return true;
fail:
  free(s);
  return false;
}

// An integer in [min, max]; undefined gives dflt when optional.
static bool get_int(napi_env env, napi_value v, const char *what, double min, double max, bool optional, double dflt, double *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  if (optional && t == napi_undefined) {
    *out = dflt;
    return true;
  }
  if (t != napi_number)
    return throw_arg(env, false, "ERR_INVALID_ARG_TYPE", "The \"%s\" argument must be of type number. Received %s", what, type_name(env, v));
  double d = 0;
  if (napi_get_value_double(env, v, &d) != napi_ok) return false;
  if (!isfinite(d) || trunc(d) != d || d < min || d > max)
    return throw_arg(env, true, "ERR_OUT_OF_RANGE", "The value of \"%s\" is out of range. It must be an integer >= %.0f and <= %.0f. Received %.17g",
                     what, min, max, d);
  *out = d;
  return true;
}

static bool get_fd(napi_env env, napi_value v, int *fd) {
  double d = 0;
  if (!get_int(env, v, "fd", 0, INT32_MAX, false, 0, &d)) return false;
  *fd = (int)d;
  return true;
}

// Flag words: callers build them with |, which turns bit 31 negative, so int32 is accepted too.
static bool get_flags(napi_env env, napi_value v, const char *what, bool optional, unsigned long *out) {
  double d = 0;
  if (!get_int(env, v, what, INT32_MIN, UINT32_MAX, optional, 0, &d)) return false;
  *out = (unsigned long)(uint32_t)(int64_t)d;
  return true;
}

static napi_value undefined(napi_env env) {
  napi_value v;
  napi_get_undefined(env, &v);
  return v;
}

// ---- xattrs -------------------------------------------------------------------------------------

// One binding serves both the l* (path, never following a final symlink) and f* (fd) calls.
typedef struct {
  char *path;  // NULL for the fd calls
  napi_value path_v;
  int fd;
} xtarget;

static bool get_xtarget(napi_env env, napi_value v, bool by_fd, xtarget *t) {
  t->path = NULL;
  t->path_v = NULL;
  t->fd = -1;
  if (by_fd) return get_fd(env, v, &t->fd);
  t->path_v = v;
  return get_bytes(env, v, "path", false, false, &t->path, NULL);
}

// Buffer size for the next read: what the probe said, but at least twice the last try (capped at
// the VFS limit, unless the probe reports more), and never 0 since a 0 size means "probe".
static size_t grow(size_t last, size_t probed) {
  size_t cap = last * 2 > XATTR_VFS_MAX ? XATTR_VFS_MAX : last * 2;
  if (probed > cap) cap = probed;
  return cap > 0 ? cap : 1;
}

static void throw_x(napi_env env, int err, const char *lname, const char *fname, const xtarget *t) {
  throw_sys(env, err, t->path ? lname : fname, t->path, t->path_v, NULL, NULL);
}

static napi_value xattr_get(napi_env env, napi_callback_info info, bool by_fd) {
  napi_value argv[MAX_ARGS], result = NULL;
  xtarget t = {NULL, NULL, -1};
  char *name = NULL, *buf = NULL;
  if (!get_args(env, info, argv) || !get_xtarget(env, argv[0], by_fd, &t) ||
      !get_bytes(env, argv[1], "name", false, false, &name, NULL))
    goto out;

  size_t cap = 0;
  for (int attempt = 0;; attempt++) {
    ssize_t size = t.path ? lgetxattr(t.path, name, NULL, 0) : fgetxattr(t.fd, name, NULL, 0);
    if (size < 0) {
      throw_x(env, errno, "lgetxattr", "fgetxattr", &t);
      goto out;
    }
    cap = grow(cap, (size_t)size);
    if (!(buf = malloc(cap))) {
      throw_x(env, ENOMEM, "lgetxattr", "fgetxattr", &t);
      goto out;
    }
    ssize_t n = t.path ? lgetxattr(t.path, name, buf, cap) : fgetxattr(t.fd, name, buf, cap);
    if (n >= 0) {
      napi_create_buffer_copy(env, (size_t)n, buf, NULL, &result);
      goto out;
    }
    int err = errno;
    free(buf);
    buf = NULL;
    if (err != ERANGE || attempt == XATTR_RETRIES) {  // ERANGE: it grew between probe and read
      throw_x(env, err, "lgetxattr", "fgetxattr", &t);
      goto out;
    }
  }
out:
  free(buf);
  free(name);
  free(t.path);
  return result;
}

static napi_value xattr_set(napi_env env, napi_callback_info info, bool by_fd) {
  napi_value argv[MAX_ARGS], result = NULL;
  xtarget t = {NULL, NULL, -1};
  char *name = NULL;
  bool is_buffer = false;
  void *value = NULL;
  size_t size = 0;
  unsigned long flags = 0;
  if (!get_args(env, info, argv) || !get_xtarget(env, argv[0], by_fd, &t) ||
      !get_bytes(env, argv[1], "name", false, false, &name, NULL))
    goto out;
  if (napi_is_buffer(env, argv[2], &is_buffer) != napi_ok || !is_buffer) {
    throw_arg(env, false, "ERR_INVALID_ARG_TYPE", "The \"value\" argument must be an instance of Buffer or Uint8Array. Received %s",
              type_name(env, argv[2]));
    goto out;
  }
  if (napi_get_buffer_info(env, argv[2], &value, &size) != napi_ok || !get_flags(env, argv[3], "flags", true, &flags)) goto out;

  int rc = t.path ? lsetxattr(t.path, name, value, size, (int)flags) : fsetxattr(t.fd, name, value, size, (int)flags);
  if (rc < 0) throw_x(env, errno, "lsetxattr", "fsetxattr", &t);
  else result = undefined(env);
out:
  free(name);
  free(t.path);
  return result;
}

static napi_value xattr_list(napi_env env, napi_callback_info info, bool by_fd) {
  napi_value argv[MAX_ARGS], result = NULL;
  xtarget t = {NULL, NULL, -1};
  char *buf = NULL;
  bool as_buffers = false;
  if (!get_args(env, info, argv) || !get_xtarget(env, argv[0], by_fd, &t)) goto out;
  if (!is_nullish(env, argv[1]) && napi_get_value_bool(env, argv[1], &as_buffers) != napi_ok) {
    throw_arg(env, false, "ERR_INVALID_ARG_TYPE", "The \"asBuffers\" argument must be of type boolean. Received %s", type_name(env, argv[1]));
    goto out;
  }

  ssize_t n;
  size_t cap = 0;
  for (int attempt = 0;; attempt++) {
    ssize_t size = t.path ? llistxattr(t.path, NULL, 0) : flistxattr(t.fd, NULL, 0);
    if (size < 0) {
      throw_x(env, errno, "llistxattr", "flistxattr", &t);
      goto out;
    }
    cap = grow(cap, (size_t)size);
    if (!(buf = malloc(cap))) {
      throw_x(env, ENOMEM, "llistxattr", "flistxattr", &t);
      goto out;
    }
    n = t.path ? llistxattr(t.path, buf, cap) : flistxattr(t.fd, buf, cap);
    if (n >= 0) break;
    int err = errno;
    free(buf);
    buf = NULL;
    if (err != ERANGE || attempt == XATTR_RETRIES) {
      throw_x(env, err, "llistxattr", "flistxattr", &t);
      goto out;
    }
  }

  // The kernel hands back "name\0name\0...".
  napi_value list, item;
  if (napi_create_array(env, &list) != napi_ok) goto out;
  uint32_t index = 0;
  for (ssize_t at = 0; at < n;) {
    size_t len = strnlen(buf + at, (size_t)(n - at));
    napi_status st = as_buffers ? napi_create_buffer_copy(env, len, buf + at, NULL, &item)
                                : napi_create_string_utf8(env, buf + at, len, &item);
    if (st != napi_ok || napi_set_element(env, list, index++, item) != napi_ok) goto out;
    at += (ssize_t)len + 1;
  }
  result = list;
out:
  free(buf);
  free(t.path);
  return result;
}

static napi_value xattr_remove(napi_env env, napi_callback_info info, bool by_fd) {
  napi_value argv[MAX_ARGS], result = NULL;
  xtarget t = {NULL, NULL, -1};
  char *name = NULL;
  if (!get_args(env, info, argv) || !get_xtarget(env, argv[0], by_fd, &t) ||
      !get_bytes(env, argv[1], "name", false, false, &name, NULL))
    goto out;
  int rc = t.path ? lremovexattr(t.path, name) : fremovexattr(t.fd, name);
  if (rc < 0) throw_x(env, errno, "lremovexattr", "fremovexattr", &t);
  else result = undefined(env);
out:
  free(name);
  free(t.path);
  return result;
}

static napi_value js_lgetxattr(napi_env env, napi_callback_info info) { return xattr_get(env, info, false); }
static napi_value js_fgetxattr(napi_env env, napi_callback_info info) { return xattr_get(env, info, true); }
static napi_value js_lsetxattr(napi_env env, napi_callback_info info) { return xattr_set(env, info, false); }
static napi_value js_fsetxattr(napi_env env, napi_callback_info info) { return xattr_set(env, info, true); }
static napi_value js_llistxattr(napi_env env, napi_callback_info info) { return xattr_list(env, info, false); }
static napi_value js_flistxattr(napi_env env, napi_callback_info info) { return xattr_list(env, info, true); }
static napi_value js_lremovexattr(napi_env env, napi_callback_info info) { return xattr_remove(env, info, false); }
static napi_value js_fremovexattr(napi_env env, napi_callback_info info) { return xattr_remove(env, info, true); }

// ---- files --------------------------------------------------------------------------------------

// mknod(path, mode, major, minor): mode carries the file type bits (S_IFCHR, S_IFIFO, ...).
static napi_value js_mknod(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS], result = NULL;
  char *path = NULL;
  double mode = 0, major = 0, minor = 0;
  if (!get_args(env, info, argv) || !get_bytes(env, argv[0], "path", false, false, &path, NULL) ||
      !get_int(env, argv[1], "mode", 0, UINT32_MAX, false, 0, &mode) ||
      !get_int(env, argv[2], "major", 0, UINT32_MAX, true, 0, &major) ||
      !get_int(env, argv[3], "minor", 0, UINT32_MAX, true, 0, &minor))
    goto out;
  if (mknod(path, (mode_t)mode, makedev((unsigned)major, (unsigned)minor)) < 0) throw_sys(env, errno, "mknod", path, argv[0], NULL, NULL);
  else result = undefined(env);
out:
  free(path);
  return result;
}

static int do_renameat2(const char *from, const char *to, unsigned flags) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 28))
  return renameat2(AT_FDCWD, from, AT_FDCWD, to, flags);
#else
  return (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, flags);
#endif
}

static napi_value js_renameat2(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS], result = NULL;
  char *from = NULL, *to = NULL;
  unsigned long flags = 0;
  if (!get_args(env, info, argv) || !get_bytes(env, argv[0], "oldPath", false, false, &from, NULL) ||
      !get_bytes(env, argv[1], "newPath", false, false, &to, NULL) || !get_flags(env, argv[2], "flags", true, &flags))
    goto out;
  if (do_renameat2(from, to, (unsigned)flags) < 0) throw_sys(env, errno, "renameat2", from, argv[0], to, argv[1]);
  else result = undefined(env);
out:
  free(from);
  free(to);
  return result;
}

static napi_value js_syncfs(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  int fd = -1;
  if (!get_args(env, info, argv) || !get_fd(env, argv[0], &fd)) return NULL;
  if (syncfs(fd) < 0) {
    throw_sys(env, errno, "syncfs", NULL, NULL, NULL, NULL);
    return NULL;
  }
  return undefined(env);
}

// ---- flock --------------------------------------------------------------------------------------

static bool get_lock_mode(napi_env env, napi_value v, int *op) {
  char mode[16];
  size_t len = 0;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  if (t != napi_string)
    return throw_arg(env, false, "ERR_INVALID_ARG_TYPE", "The \"mode\" argument must be of type string. Received %s", type_name(env, v));
  if (napi_get_value_string_utf8(env, v, mode, sizeof mode, &len) != napi_ok) return false;
  if (strlen(mode) != len) mode[0] = '\0';  // "shared\0..." is not 'shared'
  if (strcmp(mode, "shared") == 0) *op = LOCK_SH;
  else if (strcmp(mode, "exclusive") == 0) *op = LOCK_EX;
  else if (strcmp(mode, "unlock") == 0) *op = LOCK_UN;
  else return throw_arg(env, false, "ERR_INVALID_ARG_VALUE", "The \"mode\" argument must be 'shared', 'exclusive' or 'unlock'");
  return true;
}

// flockNow(fd, mode): never waits; a conflicting lock throws EAGAIN (== EWOULDBLOCK on Linux).
static napi_value js_flock_now(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  int fd = -1, op = 0;
  if (!get_args(env, info, argv) || !get_fd(env, argv[0], &fd) || !get_lock_mode(env, argv[1], &op)) return NULL;
  int rc;
  do rc = flock(fd, op | LOCK_NB);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    throw_sys(env, errno, "flock", NULL, NULL, NULL, NULL);
    return NULL;
  }
  return undefined(env);
}

// flockWait(fd, mode) -> Promise: the blocking flock runs on the libuv threadpool so the event loop
// keeps turning. While it waits it occupies one of the pool's threads (UV_THREADPOOL_SIZE, 4 by
// default), and a wait that has started cannot be cancelled.
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd, op, err;
} flock_job;

static void flock_execute(napi_env env, void *data) {
  flock_job *job = data;
  int rc;
  do rc = flock(job->fd, job->op);
  while (rc < 0 && errno == EINTR);
  job->err = rc < 0 ? errno : 0;
}

static void flock_complete(napi_env env, napi_status status, void *data) {
  flock_job *job = data;
  if (status == napi_ok && job->err == 0) {
    napi_resolve_deferred(env, job->deferred, undefined(env));
  } else {
    napi_value error = sys_error(env, status == napi_cancelled ? ECANCELED : job->err, "flock", NULL, NULL, NULL, NULL);
    if (!error) napi_get_and_clear_last_exception(env, &error);
    napi_reject_deferred(env, job->deferred, error ? error : undefined(env));
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

static napi_value js_flock_wait(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS], promise, name;
  int fd = -1, op = 0;
  if (!get_args(env, info, argv) || !get_fd(env, argv[0], &fd) || !get_lock_mode(env, argv[1], &op)) return NULL;
  flock_job *job = calloc(1, sizeof *job);
  if (!job) {
    throw_sys(env, ENOMEM, "flock", NULL, NULL, NULL, NULL);
    return NULL;
  }
  job->fd = fd;
  job->op = op;
  if (napi_create_string_utf8(env, "stratum:flock", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, flock_execute, flock_complete, job, &job->work) != napi_ok) {
    free(job);
    return NULL;
  }
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok) {
    napi_delete_async_work(env, job->work);
    free(job);
    return NULL;
  }
  if (napi_queue_async_work(env, job->work) != napi_ok) {
    // The promise is settled here, so the deferred is released and the job can go.
    napi_value error = sys_error(env, EIO, "flock", NULL, NULL, NULL, NULL);
    napi_reject_deferred(env, job->deferred, error ? error : undefined(env));
    napi_delete_async_work(env, job->work);
    free(job);
  }
  return promise;
}

// ---- lease probe --------------------------------------------------------------------------------

// openForWriting(fd): F_SETLEASE F_RDLCK is refused with EAGAIN while the inode has any writer: the
// kernel's count of files open for writing, which a shared writable mapping keeps up after its fd
// is closed (the mapping holds the file), and which includes the caller's own writable fds. On
// success the lease is dropped at once. A writer opening in between breaks the lease, and the
// kernel then signals the lease holder (this process) with SIGIO, whose default action kills it:
// so for the probe the fd's lease signal is SIGURG (default: ignored), put back afterwards.
static napi_value js_open_for_writing(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS], result = NULL;
  int fd = -1;
  if (!get_args(env, info, argv) || !get_fd(env, argv[0], &fd)) return NULL;
  int mode = fcntl(fd, F_GETFL);
  if (mode < 0) {
    throw_sys(env, errno, "fcntl", NULL, NULL, NULL, NULL);
    return NULL;
  }
  if ((mode & O_ACCMODE) != O_RDONLY) {  // it would count itself as the writer
    throw_arg(env, false, "ERR_INVALID_ARG_VALUE", "The \"fd\" argument must be opened read-only (O_RDONLY)");
    return NULL;
  }
  int old_sig = fcntl(fd, F_GETSIG);
  if (old_sig < 0 || fcntl(fd, F_SETSIG, SIGURG) < 0) {
    throw_sys(env, errno, "fcntl", NULL, NULL, NULL, NULL);
    return NULL;
  }
  int err = 0;
  bool writing = false;
  if (fcntl(fd, F_SETLEASE, F_RDLCK) == 0) {
    if (fcntl(fd, F_SETLEASE, F_UNLCK) < 0) err = errno;
  } else if (errno == EAGAIN) {
    writing = true;
  } else {
    err = errno;  // EINVAL: not a regular file (or leases off), EACCES: not the owner, no CAP_LEASE
  }
  fcntl(fd, F_SETSIG, old_sig);
  if (err) throw_sys(env, err, "fcntl", NULL, NULL, NULL, NULL);
  else napi_get_boolean(env, writing, &result);
  return result;
}

// ---- mount --------------------------------------------------------------------------------------

// mount(source, target, fstype, flags, data): source, fstype and data may be null (bind, move,
// remount and propagation changes need none of them). data may hold binary bytes.
static napi_value js_mount(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS], result = NULL;
  char *source = NULL, *target = NULL, *fstype = NULL, *data = NULL;
  unsigned long flags = 0;
  if (!get_args(env, info, argv) || !get_bytes(env, argv[0], "source", true, false, &source, NULL) ||
      !get_bytes(env, argv[1], "target", false, false, &target, NULL) ||
      !get_bytes(env, argv[2], "fstype", true, false, &fstype, NULL) || !get_flags(env, argv[3], "flags", true, &flags) ||
      !get_bytes(env, argv[4], "data", true, true, &data, NULL))
    goto out;
  if (mount(source, target, fstype, flags, data) < 0) throw_sys(env, errno, "mount", target, argv[1], NULL, NULL);
  else result = undefined(env);
out:
  free(source);
  free(target);
  free(fstype);
  free(data);
  return result;
}

static napi_value js_umount2(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS], result = NULL;
  char *target = NULL;
  unsigned long flags = 0;
  if (!get_args(env, info, argv) || !get_bytes(env, argv[0], "target", false, false, &target, NULL) ||
      !get_flags(env, argv[1], "flags", true, &flags))
    goto out;
  if (umount2(target, (int)flags) < 0) throw_sys(env, errno, "umount2", target, argv[0], NULL, NULL);
  else result = undefined(env);
out:
  free(target);
  return result;
}

// ---- new mount API ------------------------------------------------------------------------------

// Through syscall(2) rather than glibc's wrappers, which only glibc 2.36+ has. Every fd made here
// is close-on-exec, so a spawned child never holds a mount alive.

// AT_FDCWD or an fd.
static bool get_dirfd(napi_env env, napi_value v, const char *what, int *fd) {
  double d = 0;
  if (!get_int(env, v, what, AT_FDCWD, INT32_MAX, false, 0, &d)) return false;
  if (d < 0 && d != AT_FDCWD)
    return throw_arg(env, true, "ERR_OUT_OF_RANGE", "The value of \"%s\" is out of range. It must be AT_FDCWD (%d) or >= 0. Received %.0f",
                     what, AT_FDCWD, d);
  *fd = (int)d;
  return true;
}

// The kernel keeps the last few messages (8) about an fs context for the fd's reader: read(2) hands
// out one per call as "e overlayfs: ..." (e/w/i: error, warning, info) and fails with ENODATA when
// none is left, never blocking. A message longer than the buffer is dropped (EMSGSIZE). Collects
// them into out as "overlayfs: ...; w: overlayfs: ..." (out may be NULL: just empty the log).
static void fs_log(int fsfd, char *out, size_t cap) {
  char line[4096];
  size_t used = 0;
  if (out && cap) out[0] = '\0';
  for (int i = 0; i < 64; i++) {
    ssize_t n = read(fsfd, line, sizeof line - 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EMSGSIZE) continue;
    if (n <= 0) return;
    while (n > 0 && line[n - 1] == '\n') n--;
    line[n] = '\0';
    const char *text = line, *severity = "";
    if (n >= 2 && line[1] == ' ') {
      text = line + 2;
      severity = line[0] == 'w' ? "w: " : line[0] == 'i' ? "i: " : "";
    }
    if (out && used + 1 < cap) used += snprintf(out + used, cap - used, "%s%s%s", used ? "; " : "", severity, text);
    if (used >= cap) used = cap - 1;
  }
}

// Throws err for a call on an fs context, with the kernel's messages about it, if any.
static void throw_fs(napi_env env, int err, int fsfd, const char *syscall, const char *label, const char *key) {
  char log[8192];
  fs_log(fsfd, log, sizeof log);
  napi_value error = build_error(env, err, syscall, label, key, NULL, NULL, NULL, log[0] ? log : NULL);
  if (error) napi_throw(env, error);
}

// fsopen(fstype, flags = 0) -> fd of a new fs context.
static napi_value js_fsopen(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS], result = NULL;
  char *fstype = NULL;
  unsigned long flags = 0;
  if (!get_args(env, info, argv) || !get_bytes(env, argv[0], "fstype", false, false, &fstype, NULL) ||
      !get_flags(env, argv[1], "flags", true, &flags))
    goto out;
  int fd = (int)syscall(SYS_fsopen, fstype, (unsigned)flags | FSOPEN_CLOEXEC);
  if (fd < 0) throw_sys(env, errno, "fsopen", fstype, NULL, NULL, NULL);
  else napi_create_int32(env, fd, &result);
out:
  free(fstype);
  return result;
}

// One fsconfig call; on success the context's log is emptied, so a later failure reports only its
// own messages (warnings about calls that worked are dropped).
static bool fsconfig_call(napi_env env, int fsfd, unsigned cmd, const char *key, const char *value) {
  if (syscall(SYS_fsconfig, fsfd, cmd, key, value, 0) < 0) {
    throw_fs(env, errno, fsfd, "fsconfig", cmd == FSCONFIG_CMD_CREATE ? "fsconfig create" : NULL, key);
    return false;
  }
  fs_log(fsfd, NULL, 0);
  return true;
}

// fsconfigString(fsfd, key, value): FSCONFIG_SET_STRING. fsconfigFlag(fsfd, key): FSCONFIG_SET_FLAG.
static napi_value fsconfig_set(napi_env env, napi_callback_info info, bool flag) {
  napi_value argv[MAX_ARGS], result = NULL;
  int fsfd = -1;
  char *key = NULL, *value = NULL;
  if (!get_args(env, info, argv) || !get_fd(env, argv[0], &fsfd) || !get_bytes(env, argv[1], "key", false, false, &key, NULL) ||
      (!flag && !get_bytes(env, argv[2], "value", false, false, &value, NULL)))
    goto out;
  if (fsconfig_call(env, fsfd, flag ? FSCONFIG_SET_FLAG : FSCONFIG_SET_STRING, key, value)) result = undefined(env);
out:
  free(key);
  free(value);
  return result;
}

static napi_value js_fsconfig_string(napi_env env, napi_callback_info info) { return fsconfig_set(env, info, false); }
static napi_value js_fsconfig_flag(napi_env env, napi_callback_info info) { return fsconfig_set(env, info, true); }

static napi_value js_fsconfig_create(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  int fsfd = -1;
  if (!get_args(env, info, argv) || !get_fd(env, argv[0], &fsfd)) return NULL;
  return fsconfig_call(env, fsfd, FSCONFIG_CMD_CREATE, NULL, NULL) ? undefined(env) : NULL;
}

// fsmount(fsfd, attrs = 0) -> fd of a detached mount; attrs are MOUNT_ATTR_*.
static napi_value js_fsmount(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS], result = NULL;
  int fsfd = -1;
  unsigned long attrs = 0;
  if (!get_args(env, info, argv) || !get_fd(env, argv[0], &fsfd) || !get_flags(env, argv[1], "attrs", true, &attrs)) return NULL;
  int fd = (int)syscall(SYS_fsmount, fsfd, FSMOUNT_CLOEXEC, (unsigned)attrs);
  if (fd < 0) {
    throw_fs(env, errno, fsfd, "fsmount", NULL, NULL);
    return NULL;
  }
  fs_log(fsfd, NULL, 0);
  napi_create_int32(env, fd, &result);
  return result;
}

// moveMount(fromDirfd, fromPath, toDirfd, toPath, flags = 0)
static napi_value js_move_mount(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS], result = NULL;
  int from_dfd = -1, to_dfd = -1;
  char *from = NULL, *to = NULL;
  unsigned long flags = 0;
  if (!get_args(env, info, argv) || !get_dirfd(env, argv[0], "fromDirfd", &from_dfd) ||
      !get_bytes(env, argv[1], "fromPath", false, false, &from, NULL) || !get_dirfd(env, argv[2], "toDirfd", &to_dfd) ||
      !get_bytes(env, argv[3], "toPath", false, false, &to, NULL) || !get_flags(env, argv[4], "flags", true, &flags))
    goto out;
  if (syscall(SYS_move_mount, from_dfd, from, to_dfd, to, (unsigned)flags) < 0)
    throw_sys(env, errno, "move_mount", from, argv[1], to, argv[3]);
  else result = undefined(env);
out:
  free(from);
  free(to);
  return result;
}

// openTree(dirfd, path, flags = 0) -> fd: an O_PATH fd on the mount, or with OPEN_TREE_CLONE a
// detached copy of it (AT_RECURSIVE: with the mounts below it).
static napi_value js_open_tree(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS], result = NULL;
  int dfd = -1;
  char *path = NULL;
  unsigned long flags = 0;
  if (!get_args(env, info, argv) || !get_dirfd(env, argv[0], "dirfd", &dfd) ||
      !get_bytes(env, argv[1], "path", false, false, &path, NULL) || !get_flags(env, argv[2], "flags", true, &flags))
    goto out;
  int fd = (int)syscall(SYS_open_tree, dfd, path, (unsigned)flags | OPEN_TREE_CLOEXEC);
  if (fd < 0) throw_sys(env, errno, "open_tree", path, argv[1], NULL, NULL);
  else napi_create_int32(env, fd, &result);
out:
  free(path);
  return result;
}

// ---- registration -------------------------------------------------------------------------------

static void set_constant(napi_env env, napi_value obj, const char *name, double value) {
  napi_value v;
  if (napi_create_double(env, value, &v) == napi_ok) napi_set_named_property(env, obj, name, v);
}

void sys_register(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback fn;
  } fns[] = {
      {"lgetxattr", js_lgetxattr},     {"fgetxattr", js_fgetxattr},       {"lsetxattr", js_lsetxattr},
      {"fsetxattr", js_fsetxattr},     {"llistxattr", js_llistxattr},     {"flistxattr", js_flistxattr},
      {"lremovexattr", js_lremovexattr}, {"fremovexattr", js_fremovexattr}, {"mknod", js_mknod},
      {"renameat2", js_renameat2},     {"syncfs", js_syncfs},             {"flockNow", js_flock_now},
      {"flockWait", js_flock_wait},    {"mount", js_mount},               {"umount2", js_umount2},
      {"openForWriting", js_open_for_writing}, {"fsopen", js_fsopen},     {"fsconfigString", js_fsconfig_string},
      {"fsconfigFlag", js_fsconfig_flag}, {"fsconfigCreate", js_fsconfig_create}, {"fsmount", js_fsmount},
      {"moveMount", js_move_mount},    {"openTree", js_open_tree},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &fn) == napi_ok)
      napi_set_named_property(env, exports, fns[i].name, fn);
  }

  // The values come from the C headers, so the TypeScript side never restates kernel numbers.
  napi_value c;
  if (napi_create_object(env, &c) != napi_ok) return;
#define C(name) set_constant(env, c, #name, (double)(name))
  C(XATTR_CREATE); C(XATTR_REPLACE);
  C(RENAME_NOREPLACE); C(RENAME_EXCHANGE); C(RENAME_WHITEOUT);
  C(MS_RDONLY); C(MS_NOSUID); C(MS_NODEV); C(MS_NOEXEC); C(MS_SYNCHRONOUS); C(MS_REMOUNT);
  C(MS_MANDLOCK); C(MS_DIRSYNC); C(MS_NOSYMFOLLOW); C(MS_NOATIME); C(MS_NODIRATIME); C(MS_BIND);
  C(MS_MOVE); C(MS_REC); C(MS_SILENT); C(MS_UNBINDABLE); C(MS_PRIVATE); C(MS_SLAVE); C(MS_SHARED);
  C(MS_RELATIME); C(MS_STRICTATIME); C(MS_LAZYTIME);
  C(MNT_FORCE); C(MNT_DETACH); C(MNT_EXPIRE); C(UMOUNT_NOFOLLOW);
  C(AT_FDCWD); C(AT_EMPTY_PATH); C(AT_RECURSIVE);
  C(MOVE_MOUNT_F_EMPTY_PATH); C(MOVE_MOUNT_T_EMPTY_PATH); C(MOVE_MOUNT_BENEATH);
  C(OPEN_TREE_CLONE); C(MOUNT_ATTR_RDONLY); C(MOUNT_ATTR_NOSUID); C(MOUNT_ATTR_NODEV);
#undef C
  napi_set_named_property(env, exports, "sysConstants", c);
}
