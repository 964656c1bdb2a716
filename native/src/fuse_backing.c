// Syscalls a passthrough filesystem needs that node:fs does not offer (or only with loss): stat with
// nanosecond times straight into the attr layout, utimensat with UTIME_NOW/UTIME_OMIT, mknod,
// renameat2 flags, l*xattr with binary values, statvfs, readdir with d_ino, setfsuid/setfsgid.
// Paths are Buffers (any bytes but NUL). Failures return -errno instead of throwing: lookups of
// missing names are common and exceptions are slow.
#include "fuse.h"
#include "napi_args.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define ARGS(n)                                                                  \
  size_t argc = n;                                                               \
  napi_value argv[n];                                                            \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL

static napi_value int_(napi_env env, double v) {
  napi_value r;
  napi_create_double(env, v, &r);
  return r;
}

// Copies a Buffer path into a NUL-terminated string; 0 when v is not a Buffer, -1 when too long.
static int cpath(napi_env env, napi_value v, char *out, size_t cap) {
  void *d;
  size_t n;
  bool is;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is) return 0;
  napi_get_buffer_info(env, v, &d, &n);
  if (n >= cap || memchr(d, 0, n)) return -1;
  memcpy(out, d, n);
  out[n] = 0;
  return 1;
}

#define PATH_ARG(i, var)                                                         \
  char var[PATH_MAX + 1];                                                        \
  int var##_ok = cpath(env, argv[i], var, sizeof var);                           \
  if (var##_ok < 0) return int_(env, -ENAMETOOLONG)

// backingStat(path: Buffer | null, fd, out: Float64Array, index) -> 0 | -errno; fills out[index..+15]
static napi_value b_stat(napi_env env, napi_callback_info info) {
  ARGS(4);
  PATH_ARG(0, path);
  size_t idx = (size_t)num(env, argv[3]);
  double *o = f64(env, argv[2], idx + ATTR_LEN);
  if (!o) return int_(env, -EINVAL);
  o += idx;
  struct stat st;
  int rc = path_ok ? lstat(path, &st) : fstat((int)num(env, argv[1]), &st);
  if (rc < 0) return int_(env, -errno);
  o[0] = (double)st.st_ino; o[1] = st.st_mode; o[2] = (double)st.st_nlink; o[3] = st.st_uid; o[4] = st.st_gid;
  o[5] = (double)st.st_rdev; o[6] = (double)st.st_size; o[7] = (double)st.st_blocks; o[8] = (double)st.st_blksize;
  o[9] = (double)st.st_atim.tv_sec; o[10] = (double)st.st_atim.tv_nsec;
  o[11] = (double)st.st_mtim.tv_sec; o[12] = (double)st.st_mtim.tv_nsec;
  o[13] = (double)st.st_ctim.tv_sec; o[14] = (double)st.st_ctim.tv_nsec;
  return int_(env, 0);
}

// backingUtimens(path | null, fd, times: Float64Array [atime, atimeNsec, mtime, mtimeNsec]) -> 0 | -errno
// nsec may be UTIME_NOW or UTIME_OMIT.
static napi_value b_utimens(napi_env env, napi_callback_info info) {
  ARGS(3);
  PATH_ARG(0, path);
  double *t = f64(env, argv[2], 4);
  if (!t) return int_(env, -EINVAL);
  struct timespec ts[2] = {{(time_t)t[0], (long)t[1]}, {(time_t)t[2], (long)t[3]}};
  int rc = path_ok ? utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) : futimens((int)num(env, argv[1]), ts);
  return int_(env, rc < 0 ? -errno : 0);
}

// backingChown(path | null, fd, uid, gid) -> 0 | -errno   (uid/gid -1: unchanged; never follows)
static napi_value b_chown(napi_env env, napi_callback_info info) {
  ARGS(4);
  PATH_ARG(0, path);
  uid_t u = (uid_t)(int64_t)num(env, argv[2]);
  gid_t g = (gid_t)(int64_t)num(env, argv[3]);
  int rc = path_ok ? lchown(path, u, g) : fchown((int)num(env, argv[1]), u, g);
  return int_(env, rc < 0 ? -errno : 0);
}

// backingChmod(path | null, fd, mode) -> 0 | -errno
static napi_value b_chmod(napi_env env, napi_callback_info info) {
  ARGS(3);
  PATH_ARG(0, path);
  mode_t m = (mode_t)num(env, argv[2]);
  int rc = path_ok ? fchmodat(AT_FDCWD, path, m, 0) : fchmod((int)num(env, argv[1]), m);
  return int_(env, rc < 0 ? -errno : 0);
}

// backingTruncate(path | null, fd, size) -> 0 | -errno
static napi_value b_truncate(napi_env env, napi_callback_info info) {
  ARGS(3);
  PATH_ARG(0, path);
  off_t sz = (off_t)num(env, argv[2]);
  int rc = path_ok ? truncate(path, sz) : ftruncate((int)num(env, argv[1]), sz);
  return int_(env, rc < 0 ? -errno : 0);
}

// backingOpen(path, flags, mode) -> fd | -errno
static napi_value b_open(napi_env env, napi_callback_info info) {
  ARGS(3);
  PATH_ARG(0, path);
  if (!path_ok) return int_(env, -EINVAL);
  int fd = open(path, (int)num(env, argv[1]) | O_CLOEXEC, (mode_t)num(env, argv[2]));
  return int_(env, fd < 0 ? -errno : fd);
}

// backingClose(fd) -> 0 | -errno
static napi_value b_close(napi_env env, napi_callback_info info) {
  ARGS(1);
  return int_(env, close((int)num(env, argv[0])) < 0 ? -errno : 0);
}

// backingMknod(path, mode, rdev) -> 0 | -errno
static napi_value b_mknod(napi_env env, napi_callback_info info) {
  ARGS(3);
  PATH_ARG(0, path);
  if (!path_ok) return int_(env, -EINVAL);
  int rc = mknod(path, (mode_t)num(env, argv[1]), (dev_t)num(env, argv[2]));
  return int_(env, rc < 0 ? -errno : 0);
}

// backingRename(from, to, flags) -> 0 | -errno   (renameat2: RENAME_NOREPLACE/EXCHANGE/WHITEOUT)
static napi_value b_rename(napi_env env, napi_callback_info info) {
  ARGS(3);
  PATH_ARG(0, from);
  PATH_ARG(1, to);
  if (!from_ok || !to_ok) return int_(env, -EINVAL);
  int rc = renameat2(AT_FDCWD, from, AT_FDCWD, to, (unsigned)num(env, argv[2]));
  return int_(env, rc < 0 ? -errno : 0);
}

// backingSetxattr(path, name: Buffer, value: Buffer, flags) -> 0 | -errno
static napi_value b_setxattr(napi_env env, napi_callback_info info) {
  ARGS(4);
  PATH_ARG(0, path);
  PATH_ARG(1, name);
  void *val;
  size_t len;
  if (!path_ok || !name_ok || napi_get_buffer_info(env, argv[2], &val, &len) != napi_ok) return int_(env, -EINVAL);
  int rc = lsetxattr(path, name, val, len, (int)num(env, argv[3]));
  return int_(env, rc < 0 ? -errno : 0);
}

static napi_value sized_result(napi_env env, ssize_t n, char *buf, size_t size) {
  if (n < 0) return int_(env, -errno);
  if (size == 0) return int_(env, (double)n);
  napi_value r;
  napi_create_buffer_copy(env, (size_t)n, buf, NULL, &r);
  return r;
}

// backingGetxattr(path, name, size) -> Buffer (size > 0) | length (size 0) | -errno
static napi_value b_getxattr(napi_env env, napi_callback_info info) {
  ARGS(3);
  PATH_ARG(0, path);
  PATH_ARG(1, name);
  if (!path_ok || !name_ok) return int_(env, -EINVAL);
  size_t size = (size_t)num(env, argv[2]);
  char *buf = size ? malloc(size) : NULL;
  ssize_t n = lgetxattr(path, name, buf, size);
  napi_value r = sized_result(env, n, buf, size);
  free(buf);
  return r;
}

// backingListxattr(path, size) -> Buffer | length | -errno
static napi_value b_listxattr(napi_env env, napi_callback_info info) {
  ARGS(2);
  PATH_ARG(0, path);
  if (!path_ok) return int_(env, -EINVAL);
  size_t size = (size_t)num(env, argv[1]);
  char *buf = size ? malloc(size) : NULL;
  ssize_t n = llistxattr(path, buf, size);
  napi_value r = sized_result(env, n, buf, size);
  free(buf);
  return r;
}

// backingRemovexattr(path, name) -> 0 | -errno
static napi_value b_removexattr(napi_env env, napi_callback_info info) {
  ARGS(2);
  PATH_ARG(0, path);
  PATH_ARG(1, name);
  if (!path_ok || !name_ok) return int_(env, -EINVAL);
  return int_(env, lremovexattr(path, name) < 0 ? -errno : 0);
}

// backingStatfs(path, out: Float64Array(11)) -> 0 | -errno   (layout of fuseReplyStatfs)
static napi_value b_statfs(napi_env env, napi_callback_info info) {
  ARGS(2);
  PATH_ARG(0, path);
  double *o = f64(env, argv[1], 11);
  if (!path_ok || !o) return int_(env, -EINVAL);
  struct statvfs v;
  if (statvfs(path, &v) < 0) return int_(env, -errno);
  o[0] = (double)v.f_bsize; o[1] = (double)v.f_frsize; o[2] = (double)v.f_blocks; o[3] = (double)v.f_bfree;
  o[4] = (double)v.f_bavail; o[5] = (double)v.f_files; o[6] = (double)v.f_ffree; o[7] = (double)v.f_favail;
  o[8] = (double)v.f_fsid; o[9] = (double)v.f_flag; o[10] = (double)v.f_namemax;
  return int_(env, 0);
}

// backingReaddir(path) -> Buffer of records {u64 ino LE, u8 d_type, u16 nameLen LE, name} | -errno
// ("." and ".." left out)
static napi_value b_readdir(napi_env env, napi_callback_info info) {
  ARGS(1);
  PATH_ARG(0, path);
  if (!path_ok) return int_(env, -EINVAL);
  DIR *d = opendir(path);
  if (!d) return int_(env, -errno);
  size_t cap = 4096, len = 0;
  unsigned char *buf = malloc(cap);
  struct dirent *e;
  errno = 0;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' && (e->d_name[1] == 0 || (e->d_name[1] == '.' && e->d_name[2] == 0))) continue;
    size_t nl = strlen(e->d_name);
    if (len + 11 + nl > cap) {
      while (len + 11 + nl > cap) cap *= 2;
      buf = realloc(buf, cap);
    }
    uint64_t ino = e->d_ino;
    memcpy(buf + len, &ino, 8);
    buf[len + 8] = e->d_type;
    buf[len + 9] = (unsigned char)(nl & 0xff);
    buf[len + 10] = (unsigned char)(nl >> 8);
    memcpy(buf + len + 11, e->d_name, nl);
    len += 11 + nl;
  }
  int err = errno;
  closedir(d);
  if (err) { free(buf); return int_(env, -err); }
  napi_value r;
  napi_create_buffer_copy(env, len, buf, NULL, &r);
  free(buf);
  return r;
}

// backingSetFsIds(uid, gid): the calling (JS) thread creates files as this user from now on.
static napi_value b_setfsids(napi_env env, napi_callback_info info) {
  ARGS(2);
  setfsgid((gid_t)num(env, argv[1]));
  setfsuid((uid_t)num(env, argv[0]));
  return NULL;
}

// backingLseek(fd, offset, whence) -> offset | -errno   (SEEK_DATA = 3, SEEK_HOLE = 4)
static napi_value b_lseek(napi_env env, napi_callback_info info) {
  ARGS(3);
  off_t r = lseek((int)num(env, argv[0]), (off_t)num(env, argv[1]), (int)num(env, argv[2]));
  return int_(env, r < 0 ? -errno : (double)r);
}

// backingFallocate(fd, mode, offset, length) -> 0 | -errno
static napi_value b_fallocate(napi_env env, napi_callback_info info) {
  ARGS(4);
  int r = fallocate((int)num(env, argv[0]), (int)num(env, argv[1]), (off_t)num(env, argv[2]), (off_t)num(env, argv[3]));
  return int_(env, r < 0 ? -errno : 0);
}

// backingMmapCopy(fd, offset, buf: Buffer, toFile) -> 0 | -errno: copies between a MAP_SHARED mapping of
// the file and buf (toFile: buf -> file, then msync). For exercising mmap paths in tests.
static napi_value b_mmap_copy(napi_env env, napi_callback_info info) {
  ARGS(4);
  int fd = (int)num(env, argv[0]);
  off_t off = (off_t)num(env, argv[1]);
  bool to_file = false;
  napi_get_value_bool(env, argv[3], &to_file);
  void *buf;
  size_t len;
  if (napi_get_buffer_info(env, argv[2], &buf, &len) != napi_ok || len == 0) return int_(env, -EINVAL);
  long pg = sysconf(_SC_PAGESIZE);
  off_t base = off - off % pg;
  size_t maplen = (size_t)(off - base) + len;
  char *m = mmap(NULL, maplen, to_file ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, base);
  if (m == MAP_FAILED) return int_(env, -errno);
  int rc = 0;
  if (to_file) {
    memcpy(m + (off - base), buf, len);
    if (msync(m, maplen, MS_SYNC) < 0) rc = -errno;
  } else {
    memcpy(buf, m + (off - base), len);
  }
  munmap(m, maplen);
  return int_(env, rc);
}

// ---- backingCopyFile(src, dst) -> Promise<0 | -errno>: a copy-up's data copy on a thread of its
// own, so the JS thread (and every other request) goes on meanwhile. dst is created O_EXCL (a
// scratch name the caller renames into place once the copy is whole) and fsync'd; on failure it is
// removed. copy_file_range first (reflink or in-kernel copy), read/write where the two files cannot
// use it (other filesystems, old kernels). A thread of its own rather than a libuv pool thread: a
// copy takes seconds, and the pool's 4 threads do the server's other async work (object checks).
// How it keeps out of the way of other requests (docs/fuse.md, copy-up; measured with perf sched
// on 2 cores): in 1 MiB steps, yielding the CPU after each, so a thread that woke on its CPU (the
// session thread, the JS thread, the process waiting for its stat) runs within ~0.2 ms instead
// of waiting out the copy's slice (2-3 ms in one stretch inside the kernel, several per stat);
// its writeback starts as it goes and what is written is dropped from the cache, so dirty pages
// stay bounded (no 1 GiB burst written by the final fsync) and other files' cached pages stay.
// Its CPU priority stays the writer's: SCHED_IDLE and nice 19 measured no better here, and would
// starve the copy (and the writer waiting for it) on a busy machine.
typedef struct {
  char *src, *dst;
  int rc;
  napi_deferred deferred;
  napi_threadsafe_function tsfn;
} copy_job_t;

// One call's bytes (~0.2 ms of copying).
#define COPY_STEP ((size_t)1 << 20)
// Bytes whose writeback started but was not waited for yet: the copy's dirty pages never exceed it.
#define COPY_LAG ((off_t)8 << 20)

static int copy_fds(int in, int out) {
  int use_cfr = 1;
  char *mem = NULL;  // read/write fallback buffer, allocated only when needed
  off_t off = 0, waited = 0;
  for (;;) {
    ssize_t n;
    if (use_cfr) {
      loff_t ioff = off, ooff = off;
      n = copy_file_range(in, &ioff, out, &ooff, COPY_STEP, 0);
      if (n < 0 && off == 0 && (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS)) { use_cfr = 0; continue; }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) { int e = errno; free(mem); return -e; }
    } else {
      if (!mem && !(mem = malloc(COPY_STEP))) return -ENOMEM;
      n = pread(in, mem, COPY_STEP, off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) { int e = errno; free(mem); return -e; }
      for (ssize_t done = 0; done < n;) {
        ssize_t w = pwrite(out, mem + done, (size_t)(n - done), off + done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) { int e = errno; free(mem); return -e; }
        done += w;
      }
    }
    if (n == 0) break;
    // Failures of these are no error of the copy: the final fsync reports write errors.
    sync_file_range(out, off, n, SYNC_FILE_RANGE_WRITE);
    off += n;
    if (off - COPY_LAG > waited) {
      off_t len = off - COPY_LAG - waited;
      sync_file_range(out, waited, len, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
      posix_fadvise(out, waited, len, POSIX_FADV_DONTNEED);
      waited += len;
    }
    sched_yield();
  }
  free(mem);
  return 0;
}

static void *copy_thread(void *data) {
  copy_job_t *j = data;
  // the server's own ids, whatever the JS thread it was started from had set (backingSetFsIds)
  setfsgid(getegid());
  setfsuid(geteuid());
  int in = open(j->src, O_RDONLY | O_CLOEXEC);
  if (in < 0) {
    j->rc = -errno;
  } else {
    int out = open(j->dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) {
      j->rc = -errno;
    } else {
      int rc = copy_fds(in, out);
      if (rc == 0 && fsync(out) < 0) rc = -errno;
      if (close(out) < 0 && rc == 0) rc = -errno;
      if (rc < 0) unlink(j->dst);
      j->rc = rc;
    }
    close(in);
  }
  napi_threadsafe_function tsfn = j->tsfn;  // j is the JS thread's (and freed) once handed over
  napi_call_threadsafe_function(tsfn, j, napi_tsfn_blocking);
  napi_release_threadsafe_function(tsfn, napi_tsfn_release);
  return NULL;
}

static void copy_job_free(copy_job_t *j) {
  free(j->src);
  free(j->dst);
  free(j);
}

// On the JS thread once the copy is over (env NULL: the environment is going away).
static void copy_done(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)js_cb; (void)context;
  copy_job_t *j = data;
  if (env) {
    napi_value v;
    napi_create_int32(env, j->rc, &v);
    napi_resolve_deferred(env, j->deferred, v);
  }
  copy_job_free(j);
}

static napi_value b_copy_file(napi_env env, napi_callback_info info) {
  ARGS(2);
  PATH_ARG(0, src);
  PATH_ARG(1, dst);
  if (!src_ok || !dst_ok) return int_(env, -EINVAL);
  copy_job_t *j = calloc(1, sizeof *j);
  if (!j || !(j->src = strdup(src)) || !(j->dst = strdup(dst))) {
    if (j) copy_job_free(j);
    return int_(env, -ENOMEM);
  }
  napi_value promise, name;
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_string_utf8(env, "stratum:copyFile", NAPI_AUTO_LENGTH, &name);
  int err = 0;
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, NULL, copy_done, &j->tsfn) != napi_ok) {
    err = EIO;
  } else {
    pthread_attr_t attr;
    pthread_t t;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    // signals stay the JS thread's (as on libuv's threads): the copy thread starts with all blocked
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&t, &attr, copy_thread, j);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err) napi_release_threadsafe_function(j->tsfn, napi_tsfn_release);
  }
  if (err) {
    napi_value v = int_(env, -err);
    napi_resolve_deferred(env, j->deferred, v);
    copy_job_free(j);
  }
  return promise;
}

void fuse_backing_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"backingStat", NULL, b_stat, NULL, NULL, NULL, napi_default, NULL},
    {"backingUtimens", NULL, b_utimens, NULL, NULL, NULL, napi_default, NULL},
    {"backingChown", NULL, b_chown, NULL, NULL, NULL, napi_default, NULL},
    {"backingChmod", NULL, b_chmod, NULL, NULL, NULL, napi_default, NULL},
    {"backingTruncate", NULL, b_truncate, NULL, NULL, NULL, napi_default, NULL},
    {"backingOpen", NULL, b_open, NULL, NULL, NULL, napi_default, NULL},
    {"backingClose", NULL, b_close, NULL, NULL, NULL, napi_default, NULL},
    {"backingMknod", NULL, b_mknod, NULL, NULL, NULL, napi_default, NULL},
    {"backingRename", NULL, b_rename, NULL, NULL, NULL, napi_default, NULL},
    {"backingSetxattr", NULL, b_setxattr, NULL, NULL, NULL, napi_default, NULL},
    {"backingGetxattr", NULL, b_getxattr, NULL, NULL, NULL, napi_default, NULL},
    {"backingListxattr", NULL, b_listxattr, NULL, NULL, NULL, napi_default, NULL},
    {"backingRemovexattr", NULL, b_removexattr, NULL, NULL, NULL, napi_default, NULL},
    {"backingStatfs", NULL, b_statfs, NULL, NULL, NULL, napi_default, NULL},
    {"backingReaddir", NULL, b_readdir, NULL, NULL, NULL, napi_default, NULL},
    {"backingLseek", NULL, b_lseek, NULL, NULL, NULL, napi_default, NULL},
    {"backingFallocate", NULL, b_fallocate, NULL, NULL, NULL, napi_default, NULL},
    {"backingMmapCopy", NULL, b_mmap_copy, NULL, NULL, NULL, napi_default, NULL},
    {"backingSetFsIds", NULL, b_setfsids, NULL, NULL, NULL, napi_default, NULL},
    {"backingCopyFile", NULL, b_copy_file, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
