// FUSE binding on libfuse3's low-level API.
//
// Threads: fuse_session_loop_mt runs on its own pthread and spawns worker threads. A worker either
// serves a request in C (data plane: read/write/flush/fsync/fallocate/lseek/copy_file_range on a
// handle that has a backing fd, forget bookkeeping, release of fd handles) or packs it into a msg_t
// and queues it on a napi_threadsafe_function; the JS dispatcher (src/native/fuse.ts) calls the TS
// handler and answers through the fuseReply* functions below, which call fuse_reply_* on the JS
// thread. The worker never waits for JS.
// With STRATUM_FUSE_COUNTS=<file> in the environment, one more thread writes the request counts
// to <file> (counts_main; docs/fuse-binding.md).
//
// Lifetime: the loop ends when the kernel connection goes away (unmount from us or from outside).
// The loop thread queues OP_EXIT; the session is destroyed on the JS thread once every request
// handed to JS has been answered, then the threadsafe function is released so Node can exit.
#include "fuse.h"
#include "napi_args.h"

#include <fuse_lowlevel.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <sys/statvfs.h>
#include <unistd.h>

enum {
  OP_EXIT = 0, OP_LOOKUP, OP_FORGET, OP_GETATTR, OP_SETATTR, OP_READLINK, OP_MKNOD, OP_MKDIR,
  OP_UNLINK, OP_RMDIR, OP_SYMLINK, OP_RENAME, OP_LINK, OP_OPEN, OP_READ, OP_WRITE, OP_FLUSH,
  OP_RELEASE, OP_FSYNC, OP_OPENDIR, OP_READDIR, OP_RELEASEDIR, OP_FSYNCDIR, OP_STATFS,
  OP_SETXATTR, OP_GETXATTR, OP_LISTXATTR, OP_REMOVEXATTR, OP_ACCESS, OP_CREATE, OP_FALLOCATE,
  OP_READDIRPLUS, OP_LSEEK, OP_FORGET_MULTI, OP_COUNT
};
// Request counters (STRATUM_FUSE_COUNTS): one per OP_*, plus the request kinds only C serves.
#define CNT_COPY_FILE_RANGE OP_COUNT
#define CNT_N (OP_COUNT + 1)
// Names in the counts file: the kernel's opcode names (FUSE_BATCH_FORGET is forget_multi).
static const char *const cnt_names[CNT_N] = {
  [OP_EXIT] = "exit", [OP_LOOKUP] = "lookup", [OP_FORGET] = "forget", [OP_GETATTR] = "getattr",
  [OP_SETATTR] = "setattr", [OP_READLINK] = "readlink", [OP_MKNOD] = "mknod", [OP_MKDIR] = "mkdir",
  [OP_UNLINK] = "unlink", [OP_RMDIR] = "rmdir", [OP_SYMLINK] = "symlink", [OP_RENAME] = "rename",
  [OP_LINK] = "link", [OP_OPEN] = "open", [OP_READ] = "read", [OP_WRITE] = "write",
  [OP_FLUSH] = "flush", [OP_RELEASE] = "release", [OP_FSYNC] = "fsync", [OP_OPENDIR] = "opendir",
  [OP_READDIR] = "readdir", [OP_RELEASEDIR] = "releasedir", [OP_FSYNCDIR] = "fsyncdir",
  [OP_STATFS] = "statfs", [OP_SETXATTR] = "setxattr", [OP_GETXATTR] = "getxattr",
  [OP_LISTXATTR] = "listxattr", [OP_REMOVEXATTR] = "removexattr", [OP_ACCESS] = "access",
  [OP_CREATE] = "create", [OP_FALLOCATE] = "fallocate", [OP_READDIRPLUS] = "readdirplus",
  [OP_LSEEK] = "lseek", [OP_FORGET_MULTI] = "batch_forget", [CNT_COPY_FILE_RANGE] = "copy_file_range",
};

typedef struct session {
  struct fuse_session *se;
  napi_threadsafe_function tsfn;
  char *mountpoint;
  pthread_t thread;
  atomic_int pending;      // requests queued to JS and not answered yet
  atomic_ullong js_ops;    // requests that went to JS (statistics)
  atomic_ullong c_ops;     // requests served in C
  // STRATUM_FUSE_COUNTS=<file>: requests by kind, and messages to JS by kind (a forget or the
  // release note of a C handle is a message without a request), written to <file> by counts_main.
  char *counts_path;
  atomic_ullong req_count[CNT_N], js_count[CNT_N];
  atomic_int counts_stop;
  pthread_mutex_t counts_lock;  // one writer of the file at a time (the thread, the session's end)
  int loop_done, finished, loop_rc;
  int clone_fd;
  unsigned max_threads, max_idle;
  unsigned caps_want, caps_clear, capable, want;
  int no_flush;            // handles with a backing fd are opened FOPEN_NOFLUSH
  // Zero-message open (docs/fuse-binding.md): open answers ENOSYS, the kernel stops sending
  // open/release for files, and reads (fh 0) find their backing fd by inode (inode_fd_*).
  int no_open;
  atomic_int inode_fds;    // backing fds the inode table holds (bounded by INODE_FD_MAX)
  atomic_ullong open_gen;  // generation of openable entries (a registration replaced meanwhile)
  // Writes by inode (zero-message open on a writable mount): C writes only to a backing TS marked
  // writable (OPENABLE_WRITABLE), through the entry's own O_WRONLY fd. write_lock is held shared
  // by every such write in progress; the barrier (fuseHoldWrites) takes it exclusively, so it
  // waits for them, drops every writable fd and, while writes_held, sends writes to TS.
  pthread_rwlock_t write_lock;
  int writes_held;
  // Open fast path: inodes TS registered with a backing path; C opens them without JS.
  pthread_rwlock_t open_lock;
  struct openable *open_tab;  // open addressing, key ino (0 = empty)
  size_t open_cap, open_used;
  // getxattr(security.capability) answered in C (cap_*, below): inodes known to have none.
  int cap_cache;
  pthread_mutex_t cap_lock;
  fuse_ino_t *cap_tab;        // open addressing, key ino (0 = empty)
  size_t cap_cap, cap_used;
  uint64_t cap_epoch;         // + 1 on every change that may give an inode a capability
  struct cap_wait *cap_waits; // getxattr(security.capability) requests waiting for JS
  // getattr answered in C (attrsrc_*, below): inodes TS registered with a backing path.
  pthread_rwlock_t attr_lock;
  struct attr_src *attr_tab;  // open addressing, key ino (0 = empty)
  size_t attr_cap, attr_used;
} session_t;

// A backing fd shared by every reader of one inode: the table holds one reference, each read in
// flight one more; the last put closes it (outside any lock).
typedef struct bfd { atomic_int refs; int fd; } bfd_t;

typedef struct openable {
  fuse_ino_t ino;
  double backing_ino;  // st_ino the path must still lead to
  unsigned flags;      // OPENABLE_*
  char *path;
  bfd_t *bfd;          // opened on the first handle-less read; NULL until then
  bfd_t *wbfd;         // OPENABLE_WRITABLE: opened O_WRONLY on the first handle-less write
  unsigned long long gen;
} openable_t;
// Fds the inode table keeps open at most; past it a handle-less read opens and closes its own.
#define INODE_FD_MAX 4096
#define OPENABLE_KEEP_CACHE 1
#define OPENABLE_WRITEBACK 2  // O_WRONLY -> O_RDWR, no O_APPEND (kernel writeback cache)
#define OPENABLE_READONLY 4   // only opens without write access and without O_TRUNC; others go to TS
#define OPENABLE_WRITABLE 8   // handle-less writes, fallocate and fsync may go to the path in C

// A file handle: fi->fh points to one of these. Directory handles carry the TS fh directly.
typedef struct {
  int fd;          // backing fd served in C, or -1: the TS handlers serve this handle
  int notify;      // tell TS about the release (handles TS opened)
  double jsfh;     // TS's own handle number
  struct bfd *bfd; // a read-only handle sharing the inode's backing fd (fd is bfd->fd), or NULL
} fhandle_t;

#define FH(fi) ((fhandle_t *)(uintptr_t)(fi)->fh)

typedef struct msg {
  int op;
  fuse_req_t req;          // NULL for notifications (forget, release of fd handles, exit)
  double ino;
  uint32_t uid, gid, pid, umask;
  double a[4];
  char *name, *name2, *data;
  size_t name_len, name2_len, data_len;
  char tail[];
} msg_t;

// ---------------------------------------------------------------- request -> JS

static msg_t *msg_new(int op, fuse_req_t req, fuse_ino_t ino, const char *name, const char *name2,
                      size_t data_len) {
  size_t n1 = name ? strlen(name) : 0, n2 = name2 ? strlen(name2) : 0;
  msg_t *m = malloc(sizeof(msg_t) + n1 + n2 + data_len + 1);
  if (!m) return NULL;
  memset(m, 0, sizeof(msg_t));
  m->op = op;
  m->req = req;
  m->ino = (double)ino;
  char *p = m->tail;
  if (name) { m->name = p; m->name_len = n1; memcpy(p, name, n1); p += n1; }
  if (name2) { m->name2 = p; m->name2_len = n2; memcpy(p, name2, n2); p += n2; }
  if (data_len) { m->data = p; m->data_len = data_len; }
  if (req) {
    const struct fuse_ctx *c = fuse_req_ctx(req);
    m->uid = c->uid; m->gid = c->gid; m->pid = c->pid; m->umask = c->umask;
  }
  return m;
}

static void cap_answered(session_t *s, fuse_req_t req, int err);
static void to_js(session_t *s, msg_t *m) {
  if (m->req) atomic_fetch_add(&s->pending, 1);
  atomic_fetch_add(&s->js_ops, 1);
  if (s->counts_path) atomic_fetch_add_explicit(&s->js_count[m->op], 1, memory_order_relaxed);
  if (napi_call_threadsafe_function(s->tsfn, m, napi_tsfn_nonblocking) != napi_ok) {
    if (m->req) { atomic_fetch_sub(&s->pending, 1); cap_answered(s, m->req, EIO); fuse_reply_err(m->req, EIO); }
    free(m);
  }
}

// Queue a request for JS; on allocation failure answer ENOMEM right away.
static msg_t *req_msg(fuse_req_t req, int op, fuse_ino_t ino, const char *name, const char *name2,
                      size_t data_len) {
  msg_t *m = msg_new(op, req, ino, name, name2, data_len);
  if (!m) fuse_reply_err(req, ENOMEM);
  return m;
}

#define SESSION(req) ((session_t *)fuse_req_userdata(req))
// Every request the kernel sends through an op below, whoever answers it (libfuse itself answers
// init, destroy, interrupt and the ops not in ll_ops: those are not counted).
#define COUNT(req, kind) atomic_fetch_add_explicit(&SESSION(req)->req_count[kind], 1, memory_order_relaxed)
#define SIMPLE(op, req, ino, name, name2, a0, a1, a2, a3)                        \
  do {                                                                           \
    msg_t *m_ = req_msg(req, op, ino, name, name2, 0);                           \
    if (!m_) return;                                                             \
    m_->a[0] = (a0); m_->a[1] = (a1); m_->a[2] = (a2); m_->a[3] = (a3);          \
    to_js(SESSION(req), m_);                                                     \
  } while (0)

static double jsfh_of(struct fuse_file_info *fi) { return fi && fi->fh ? FH(fi)->jsfh : -1; }

static void op_init(void *ud, struct fuse_conn_info *conn) {
  session_t *s = ud;
  s->capable = conn->capable;
  conn->want |= s->caps_want & conn->capable;
  conn->want &= ~s->caps_clear;
  conn->time_gran = 1;
  s->want = conn->want;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  COUNT(req, OP_LOOKUP);
  SIMPLE(OP_LOOKUP, req, parent, name, NULL, 0, 0, 0, 0);
}

static void cap_forget(session_t *s, fuse_ino_t ino);
static void attrsrc_forget(session_t *s, fuse_ino_t ino);
static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  COUNT(req, OP_FORGET);
  session_t *s = SESSION(req);
  cap_forget(s, ino);
  attrsrc_forget(s, ino);
  msg_t *m = msg_new(OP_FORGET, NULL, ino, NULL, NULL, 0);
  fuse_reply_none(req);
  if (!m) return;  // a lost forget only leaks an inode entry
  m->a[0] = (double)nlookup;
  to_js(s, m);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  COUNT(req, OP_FORGET_MULTI);
  session_t *s = SESSION(req);
  msg_t *m = msg_new(OP_FORGET_MULTI, NULL, 0, NULL, NULL, count * 2 * sizeof(double));
  if (!m) for (size_t i = 0; i < count; i++) { cap_forget(s, forgets[i].ino); attrsrc_forget(s, forgets[i].ino); }
  if (m) {
    double *d = (double *)m->data;  // tail is only char-aligned: copy through memcpy
    for (size_t i = 0; i < count; i++) {
      cap_forget(s, forgets[i].ino);
      attrsrc_forget(s, forgets[i].ino);
      double pair[2] = {(double)forgets[i].ino, (double)forgets[i].nlookup};
      memcpy(d + 2 * i, pair, sizeof pair);
    }
    m->a[0] = (double)count;
  }
  fuse_reply_none(req);
  if (m) to_js(s, m);
}

static int getattr_in_c(session_t *s, fuse_req_t req, fuse_ino_t ino);
static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  COUNT(req, OP_GETATTR);
  if (getattr_in_c(SESSION(req), req, ino)) return;
  SIMPLE(OP_GETATTR, req, ino, NULL, NULL, jsfh_of(fi), 0, 0, 0);
}

static int setattr_in_c(session_t *s, fuse_req_t req, fuse_ino_t ino, const struct stat *attr, int to_set);
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi) {
  COUNT(req, OP_SETATTR);
  if (setattr_in_c(SESSION(req), req, ino, attr, to_set)) return;
  msg_t *m = req_msg(req, OP_SETATTR, ino, NULL, NULL, 10 * sizeof(double));
  if (!m) return;
  double v[10] = {attr->st_mode, attr->st_uid, attr->st_gid, (double)attr->st_size,
                  (double)attr->st_atim.tv_sec, (double)attr->st_atim.tv_nsec,
                  (double)attr->st_mtim.tv_sec, (double)attr->st_mtim.tv_nsec,
                  (double)attr->st_ctim.tv_sec, (double)attr->st_ctim.tv_nsec};
  memcpy(m->data, v, sizeof v);
  m->a[0] = to_set;
  m->a[1] = jsfh_of(fi);
  to_js(SESSION(req), m);
}

// ---- getattr in C
//
// After a create, mkdir or write the kernel drops the attributes it had of the file and of its
// dir, and asks again at the next permission check or chown (untar: about 2 getattr per file).
// TS registers inodes whose attributes are a backing file's (a HEAD's upper entries):
// fuseSetAttrSource(ino, path, backingIno, stIno, timeout, flags). C then answers getattr itself:
// lstat(path), and if it is still the inode backingIno, replies with its attributes, st_ino
// replaced by stIno (the number the mount shows) and nlink by 1 for ATTRSRC_NLINK1 (a merged dir,
// as overlayfs reports). If the path leads elsewhere (renamed, removed) the request goes to TS.
// Forgotten at forget; TS clears an inode whose file it removes and everything at a view switch
// (the write lock waits for C answers in progress).
typedef struct attr_src {
  fuse_ino_t ino;
  double backing_ino, st_ino, timeout;
  unsigned flags;
  char *path;
} attr_src_t;
#define ATTRSRC_NLINK1 1
#define ATTRSRC_SETATTR 2

static attr_src_t *attrsrc_slot(session_t *s, fuse_ino_t ino) {
  size_t mask = s->attr_cap - 1;
  for (size_t i = (size_t)(ino * 0x9E3779B97F4A7C15ull) & mask;; i = (i + 1) & mask)
    if (s->attr_tab[i].ino == ino || s->attr_tab[i].ino == 0) return &s->attr_tab[i];
}

// attr_lock held for writing; takes e.path
static void attrsrc_insert_locked(session_t *s, attr_src_t e) {
  if ((s->attr_used + 1) * 2 > s->attr_cap) {
    size_t ocap = s->attr_cap, ncap = ocap ? ocap * 2 : 1024;
    attr_src_t *old = s->attr_tab, *nt = calloc(ncap, sizeof *nt);
    if (!nt) { free(e.path); return; }
    s->attr_tab = nt;
    s->attr_cap = ncap;
    for (size_t i = 0; i < ocap; i++) if (old[i].ino) *attrsrc_slot(s, old[i].ino) = old[i];
    free(old);
  }
  attr_src_t *x = attrsrc_slot(s, e.ino);
  if (x->ino) free(x->path);
  else s->attr_used++;
  *x = e;
}

// attr_lock held for writing
static void attrsrc_remove_locked(session_t *s, fuse_ino_t ino) {
  if (!s->attr_used) return;
  attr_src_t *x = attrsrc_slot(s, ino);
  if (!x->ino) return;
  free(x->path);
  memset(x, 0, sizeof *x);
  s->attr_used--;
  size_t mask = s->attr_cap - 1;
  for (size_t j = ((size_t)(x - s->attr_tab) + 1) & mask; s->attr_tab[j].ino; j = (j + 1) & mask) {
    attr_src_t e = s->attr_tab[j];
    memset(&s->attr_tab[j], 0, sizeof e);
    *attrsrc_slot(s, e.ino) = e;  // backward shift
  }
}

static void attrsrc_clear_locked(session_t *s) {
  for (size_t i = 0; i < s->attr_cap; i++) if (s->attr_tab[i].ino) free(s->attr_tab[i].path);
  free(s->attr_tab);
  s->attr_tab = NULL;
  s->attr_cap = s->attr_used = 0;
}

static void attrsrc_forget(session_t *s, fuse_ino_t ino) {
  if (!s->attr_used) return;
  pthread_rwlock_wrlock(&s->attr_lock);
  attrsrc_remove_locked(s, ino);
  pthread_rwlock_unlock(&s->attr_lock);
}

// 1 = answered here, 0 = go to TS
static int getattr_in_c(session_t *s, fuse_req_t req, fuse_ino_t ino) {
  if (!s->attr_used) return 0;
  struct stat st;
  double st_ino = 0, timeout = 0;
  int ok = 0;
  pthread_rwlock_rdlock(&s->attr_lock);
  if (s->attr_used) {
    attr_src_t *x = attrsrc_slot(s, ino);
    if (x->ino && lstat(x->path, &st) == 0 && (double)st.st_ino == x->backing_ino) {
      ok = 1;
      st_ino = x->st_ino;
      timeout = x->timeout;
      if (x->flags & ATTRSRC_NLINK1) st.st_nlink = 1;
    }
  }
  pthread_rwlock_unlock(&s->attr_lock);
  if (!ok) return 0;
  st.st_ino = (ino_t)st_ino;
  atomic_fetch_add(&s->c_ops, 1);
  fuse_reply_attr(req, &st, timeout);
  return 1;
}

// setattr of owner, mode and times of a registered inode (ATTRSRC_SETATTR: the filesystem does
// nothing but apply them to the backing file, as the TS union does for upper entries), answered
// in C: tar sets all three on every file it makes. The file is opened O_PATH|O_NOFOLLOW and
// checked to be the inode backingIno, then changed through that fd, so a rename meanwhile cannot
// redirect the change; all under the read lock, so a view switch (write lock) waits for it.
// Size changes and anything else go to TS.
#define SETATTR_IN_C (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_ATIME | \
  FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME | \
  FUSE_SET_ATTR_KILL_SUID | FUSE_SET_ATTR_KILL_SGID | FUSE_SET_ATTR_KILL_PRIV)

static int setattr_in_c(session_t *s, fuse_req_t req, fuse_ino_t ino, const struct stat *attr, int to_set) {
  if (!s->attr_used || (to_set & ~SETATTR_IN_C)) return 0;
  struct stat st;
  double st_ino = 0, timeout = 0;
  int done = 0, err = 0;
  pthread_rwlock_rdlock(&s->attr_lock);
  attr_src_t *x = s->attr_used ? attrsrc_slot(s, ino) : NULL;
  int fd = x && x->ino && (x->flags & ATTRSRC_SETATTR) ? open(x->path, O_PATH | O_NOFOLLOW | O_CLOEXEC) : -1;
  if (fd >= 0 && fstat(fd, &st) == 0 && (double)st.st_ino == x->backing_ino && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
    done = 1;
    st_ino = x->st_ino;
    timeout = x->timeout;
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    if ((to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) &&
        fchownat(fd, "", (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1,
                 (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1, AT_EMPTY_PATH) < 0) err = errno;
    if (!err && (to_set & FUSE_SET_ATTR_MODE) && chmod(proc, attr->st_mode & 07777) < 0) err = errno;
    if (!err && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW))) {
      struct timespec ts[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
      if (to_set & FUSE_SET_ATTR_ATIME_NOW) ts[0].tv_nsec = UTIME_NOW;
      else if (to_set & FUSE_SET_ATTR_ATIME) ts[0] = attr->st_atim;
      if (to_set & FUSE_SET_ATTR_MTIME_NOW) ts[1].tv_nsec = UTIME_NOW;
      else if (to_set & FUSE_SET_ATTR_MTIME) ts[1] = attr->st_mtim;
      if (utimensat(AT_FDCWD, proc, ts, 0) < 0) err = errno;
    }
    if (!err && fstat(fd, &st) < 0) err = errno;
    if (x->flags & ATTRSRC_NLINK1) st.st_nlink = 1;
  }
  pthread_rwlock_unlock(&s->attr_lock);
  if (fd >= 0) close(fd);
  if (!done) return 0;
  atomic_fetch_add(&s->c_ops, 1);
  if (err) { fuse_reply_err(req, err); return 1; }
  st.st_ino = (ino_t)st_ino;
  fuse_reply_attr(req, &st, timeout);
  return 1;
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  COUNT(req, OP_READLINK);
  SIMPLE(OP_READLINK, req, ino, NULL, NULL, 0, 0, 0, 0);
}
static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  COUNT(req, OP_MKNOD);
  SIMPLE(OP_MKNOD, req, parent, name, NULL, mode, (double)rdev, 0, 0);
}
static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  COUNT(req, OP_MKDIR);
  SIMPLE(OP_MKDIR, req, parent, name, NULL, mode, 0, 0, 0);
}
static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
  COUNT(req, OP_UNLINK);
  SIMPLE(OP_UNLINK, req, parent, name, NULL, 0, 0, 0, 0);
}
static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
  COUNT(req, OP_RMDIR);
  SIMPLE(OP_RMDIR, req, parent, name, NULL, 0, 0, 0, 0);
}
static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
  COUNT(req, OP_SYMLINK);
  SIMPLE(OP_SYMLINK, req, parent, name, link, 0, 0, 0, 0);
}
static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags) {
  COUNT(req, OP_RENAME);
  SIMPLE(OP_RENAME, req, parent, name, newname, (double)newparent, flags, 0, 0);
}
static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  COUNT(req, OP_LINK);
  SIMPLE(OP_LINK, req, ino, newname, NULL, (double)newparent, 0, 0, 0);
}
static openable_t *openable_find(session_t *s, fuse_ino_t ino) {
  if (!s->open_cap) return NULL;
  size_t mask = s->open_cap - 1;
  for (size_t i = (size_t)(ino * 0x9E3779B97F4A7C15ull) & mask;; i = (i + 1) & mask) {
    if (s->open_tab[i].ino == ino) return &s->open_tab[i];
    if (s->open_tab[i].ino == 0) return NULL;
  }
}

static bfd_t *inode_bfd_get(session_t *s, fuse_ino_t ino, int writable);
static void bfd_put(session_t *s, bfd_t *b);

// A read-only open (no O_TRUNC) of an inode whose backing fd the table holds, or can open: the
// handle shares that fd (reads are pread at the kernel's offsets), so an open costs no syscall
// but the first; 1 = answered, 0 = not this way.
static int open_shared(session_t *s, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) return 0;
  bfd_t *b = inode_bfd_get(s, ino, 0);
  if (!b) return 0;
  unsigned oflags = 0;
  pthread_rwlock_rdlock(&s->open_lock);
  openable_t *o = openable_find(s, ino);
  if (o) oflags = o->flags;
  pthread_rwlock_unlock(&s->open_lock);
  fhandle_t *h = malloc(sizeof *h);
  if (!h) { bfd_put(s, b); fuse_reply_err(req, ENOMEM); return 1; }
  h->fd = b->fd; h->notify = 0; h->jsfh = -1; h->bfd = b;
  fi->fh = (uint64_t)(uintptr_t)h;
  fi->keep_cache = !!(oflags & OPENABLE_KEEP_CACHE);
  fi->noflush = s->no_flush;
  atomic_fetch_add(&s->c_ops, 1);
  if (fuse_reply_open(req, fi) < 0) { bfd_put(s, b); free(h); }
  return 1;
}

// Serve open in C when TS registered the inode's backing path and it still leads to the same
// backing inode; 1 = answered, 0 = go to TS.
static int open_in_c(session_t *s, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  if (!s->open_used) return 0;
  if (open_shared(s, req, ino, fi)) return 1;
  char path[PATH_MAX];
  double bino;
  unsigned oflags;
  pthread_rwlock_rdlock(&s->open_lock);
  openable_t *o = openable_find(s, ino);
  int found = o && strlen(o->path) < sizeof path;
  if (found) { strcpy(path, o->path); bino = o->backing_ino; oflags = o->flags; }
  pthread_rwlock_unlock(&s->open_lock);
  if (!found) return 0;
  if ((oflags & OPENABLE_READONLY) && ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))) return 0;
  int flags = (fi->flags & ~(O_DIRECT | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC)) | O_NOFOLLOW | O_CLOEXEC;
  if (oflags & OPENABLE_WRITEBACK) {
    if ((flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
    flags &= ~O_APPEND;
  }
  int fd = open(path, flags);
  if (fd < 0) return 0;  // TS decides (renamed, removed, permissions...)
  struct stat st;
  if (fstat(fd, &st) < 0 || (double)st.st_ino != bino || !S_ISREG(st.st_mode)) { close(fd); return 0; }
  if ((fi->flags & O_TRUNC) && ftruncate(fd, 0) < 0) { int e = errno; close(fd); fuse_reply_err(req, e); return 1; }
  fhandle_t *h = malloc(sizeof *h);
  if (!h) { close(fd); fuse_reply_err(req, ENOMEM); return 1; }
  h->fd = fd; h->notify = 0; h->jsfh = -1; h->bfd = NULL;
  fi->fh = (uint64_t)(uintptr_t)h;
  fi->keep_cache = !!(oflags & OPENABLE_KEEP_CACHE);
  fi->noflush = s->no_flush;
  atomic_fetch_add(&s->c_ops, 1);
  if (fuse_reply_open(req, fi) < 0) { close(fd); free(h); }
  return 1;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  COUNT(req, OP_OPEN);
  // the kernel sets no_open for the whole connection on ENOSYS: no more open/release for files
  if (SESSION(req)->no_open) { fuse_reply_err(req, ENOSYS); return; }
  if (open_in_c(SESSION(req), req, ino, fi)) return;
  SIMPLE(OP_OPEN, req, ino, NULL, NULL, fi->flags, 0, 0, 0);
}
static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi) {
  COUNT(req, OP_CREATE);
  SIMPLE(OP_CREATE, req, parent, name, NULL, mode, fi->flags, 0, 0);
}

// ---- data plane: served here when the handle has a backing fd

static void bfd_put(session_t *s, bfd_t *b) {
  if (!b || atomic_fetch_sub(&b->refs, 1) != 1) return;
  close(b->fd);
  free(b);
  atomic_fetch_sub(&s->inode_fds, 1);
}

// The inode's backing fd with a reference for the caller (bfd_put after use), opening it on first
// use: for reads (`writable` 0) what TS registered, else the writable one of an upper file TS
// marked writable. NULL when there is none, or for writes while they are held: the request goes
// to TS. The table lock is held only to look up or install, never across open/fstat/close:
// requests on many inodes, or on one, run in parallel. Writes call this with write_lock held
// shared, so the barrier knows no write is in progress.
static bfd_t *inode_bfd_get(session_t *s, fuse_ino_t ino, int writable) {
  if (!s->open_used || (writable && s->writes_held)) return NULL;
  char path[PATH_MAX];
  double bino = 0;
  unsigned long long gen = 0;
  bfd_t *b = NULL;
  int found = 0;
  pthread_rwlock_rdlock(&s->open_lock);
  openable_t *o = openable_find(s, ino);
  if (o && (!writable || (o->flags & OPENABLE_WRITABLE))) {
    bfd_t *have = writable ? o->wbfd : o->bfd;
    if (have) { b = have; atomic_fetch_add(&b->refs, 1); }
    else if (strlen(o->path) < sizeof path) { found = 1; strcpy(path, o->path); bino = o->backing_ino; gen = o->gen; }
  }
  pthread_rwlock_unlock(&s->open_lock);
  if (b || !found) return b;
  int fd = open(path, (writable ? O_WRONLY : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return NULL;
  struct stat st;
  if (fstat(fd, &st) < 0 || (double)st.st_ino != bino || !S_ISREG(st.st_mode)) { close(fd); return NULL; }
  b = malloc(sizeof *b);
  if (!b) { close(fd); return NULL; }
  b->fd = fd;
  atomic_init(&b->refs, 1);  // the caller's
  atomic_fetch_add(&s->inode_fds, 1);
  bfd_t *drop = NULL;
  pthread_rwlock_wrlock(&s->open_lock);
  o = openable_find(s, ino);
  if (o && o->gen == gen && (!writable || (o->flags & OPENABLE_WRITABLE))) {
    bfd_t **slot = writable ? &o->wbfd : &o->bfd;
    if (*slot) { drop = b; b = *slot; atomic_fetch_add(&b->refs, 1); }  // another request was first
    else if (atomic_load(&s->inode_fds) <= INODE_FD_MAX) { *slot = b; atomic_fetch_add(&b->refs, 1); }
    // else: over the bound, this request uses the fd alone and closes it
  } else if (writable) {
    drop = b; b = NULL;  // registration replaced or no longer writable: TS decides
  }
  // a read whose registration was replaced meanwhile is served from what was checked; nothing kept
  pthread_rwlock_unlock(&s->open_lock);
  bfd_put(s, drop);
  return b;
}

// A read without a handle (zero-message open): from the inode's backing fd in C, else in TS
// (which checks the object, registers it, and answers from its own bytes).
static void read_by_inode(session_t *s, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off) {
  bfd_t *b = inode_bfd_get(s, ino, 0);
  if (!b) { SIMPLE(OP_READ, req, ino, NULL, NULL, -1, (double)size, (double)off, 0); return; }
  atomic_fetch_add(&s->c_ops, 1);
  struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
  buf.buf[0].fd = b->fd;
  buf.buf[0].pos = off;
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
  bfd_put(s, b);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  COUNT(req, OP_READ);
  if (!fi->fh) { read_by_inode(SESSION(req), req, ino, size, off); return; }
  fhandle_t *h = FH(fi);
  if (h->fd < 0) { SIMPLE(OP_READ, req, ino, NULL, NULL, h->jsfh, (double)size, (double)off, 0); return; }
  atomic_fetch_add(&SESSION(req)->c_ops, 1);
  struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
  buf.buf[0].fd = h->fd;
  buf.buf[0].pos = off;
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

// Writes a request's data at `off` in fd (a backing file), in C: bytes written or -errno.
static ssize_t write_to_fd(session_t *s, int fd, struct fuse_bufvec *in, off_t off) {
  atomic_fetch_add(&s->c_ops, 1);
  struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
  out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
  out.buf[0].fd = fd;
  out.buf[0].pos = off;
  return fuse_buf_copy(&out, in, 0);
}

static void reply_written(fuse_req_t req, ssize_t res) {
  if (res < 0) fuse_reply_err(req, (int)-res);
  else fuse_reply_write(req, (size_t)res);
}

static void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
                         struct fuse_file_info *fi) {
  COUNT(req, OP_WRITE);
  static fhandle_t no_handle = {-1, 0, -1, NULL};  // handle-less write (zero-message open): TS
  fhandle_t *h = fi->fh ? FH(fi) : &no_handle;
  size_t size = fuse_buf_size(in);
  session_t *s = SESSION(req);
  if (!fi->fh && s->open_used) {
    pthread_rwlock_rdlock(&s->write_lock);
    bfd_t *b = inode_bfd_get(s, ino, 1);
    if (b) {
      ssize_t res = write_to_fd(s, b->fd, in, off);
      pthread_rwlock_unlock(&s->write_lock);
      bfd_put(s, b);
      reply_written(req, res);
      return;
    }
    pthread_rwlock_unlock(&s->write_lock);
  }
  if (h->fd >= 0) { reply_written(req, write_to_fd(s, h->fd, in, off)); return; }
  msg_t *m = req_msg(req, OP_WRITE, ino, NULL, NULL, size);
  if (!m) return;
  struct fuse_bufvec mem = FUSE_BUFVEC_INIT(size);
  mem.buf[0].mem = m->data;
  ssize_t res = size ? fuse_buf_copy(&mem, in, 0) : 0;
  if (res < 0) { fuse_reply_err(req, (int)-res); free(m); return; }
  m->data_len = (size_t)res;
  if (!m->data) m->data = m->tail;
  m->a[0] = h->jsfh; m->a[1] = (double)off; m->a[2] = fi->flags; m->a[3] = fi->writepage;
  to_js(SESSION(req), m);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  COUNT(req, OP_FLUSH);
  // no handle: nothing of ours to flush; ENOSYS stops flushes for the connection
  if (!fi->fh) { fuse_reply_err(req, ENOSYS); return; }
  fhandle_t *h = FH(fi);
  if (h->fd < 0) { SIMPLE(OP_FLUSH, req, ino, NULL, NULL, h->jsfh, 0, 0, 0); return; }
  atomic_fetch_add(&SESSION(req)->c_ops, 1);
  // close(dup(fd)): what a close() of the original would do for the backing fs (NFS, locks).
  int d = dup(h->fd);
  int err = 0;
  if (d < 0) err = errno;
  else if (close(d) < 0) err = errno;
  fuse_reply_err(req, err);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  COUNT(req, OP_RELEASE);
  if (!fi->fh) { fuse_reply_err(req, 0); return; }
  fhandle_t *h = FH(fi);
  session_t *s = SESSION(req);
  double jsfh = h->jsfh;
  int fd = h->fd, notify = h->notify;
  bfd_t *shared = h->bfd;
  free(h);
  if (fd < 0) { SIMPLE(OP_RELEASE, req, ino, NULL, NULL, jsfh, fi->flags, 0, 0); return; }
  atomic_fetch_add(&s->c_ops, 1);
  if (shared) bfd_put(s, shared); else close(fd);
  fuse_reply_err(req, 0);
  if (!notify) return;
  msg_t *m = msg_new(OP_RELEASE, NULL, ino, NULL, NULL, 0);  // TS learns about it, no reply
  if (!m) return;
  m->a[0] = jsfh; m->a[1] = fi->flags; m->a[2] = 1;
  to_js(s, m);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  COUNT(req, OP_FSYNC);
  session_t *s = SESSION(req);
  if (!fi->fh) {
    // handle-less: the writable backing in C, else TS (a read-only mount answers 0 there)
    pthread_rwlock_rdlock(&s->write_lock);
    bfd_t *b = inode_bfd_get(s, ino, 1);
    pthread_rwlock_unlock(&s->write_lock);
    if (!b) { SIMPLE(OP_FSYNC, req, ino, NULL, NULL, -1, datasync, 0, 0); return; }
    atomic_fetch_add(&s->c_ops, 1);
    int res = datasync ? fdatasync(b->fd) : fsync(b->fd);
    int err = res < 0 ? errno : 0;
    bfd_put(s, b);
    fuse_reply_err(req, err);
    return;
  }
  fhandle_t *h = FH(fi);
  if (h->fd < 0) { SIMPLE(OP_FSYNC, req, ino, NULL, NULL, h->jsfh, datasync, 0, 0); return; }
  atomic_fetch_add(&SESSION(req)->c_ops, 1);
  int res = datasync ? fdatasync(h->fd) : fsync(h->fd);
  fuse_reply_err(req, res < 0 ? errno : 0);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                         struct fuse_file_info *fi) {
  COUNT(req, OP_FALLOCATE);
  if (!fi->fh) {
    // handle-less: like a write (held by the barrier), else TS (which may copy up)
    session_t *s = SESSION(req);
    pthread_rwlock_rdlock(&s->write_lock);
    bfd_t *b = inode_bfd_get(s, ino, 1);
    if (!b) {
      pthread_rwlock_unlock(&s->write_lock);
      SIMPLE(OP_FALLOCATE, req, ino, NULL, NULL, -1, mode, (double)off, (double)len);
      return;
    }
    atomic_fetch_add(&s->c_ops, 1);
    int res = fallocate(b->fd, mode, off, len);
    int err = res < 0 ? errno : 0;
    pthread_rwlock_unlock(&s->write_lock);
    bfd_put(s, b);
    fuse_reply_err(req, err);
    return;
  }
  fhandle_t *h = FH(fi);
  if (h->fd < 0) {
    SIMPLE(OP_FALLOCATE, req, ino, NULL, NULL, h->jsfh, mode, (double)off, (double)len);
    return;
  }
  atomic_fetch_add(&SESSION(req)->c_ops, 1);
  int res = fallocate(h->fd, mode, off, len);
  fuse_reply_err(req, res < 0 ? errno : 0);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi) {
  COUNT(req, OP_LSEEK);
  if (!fi->fh) { fuse_reply_err(req, ENOSYS); return; }  // the kernel's generic lseek
  fhandle_t *h = FH(fi);
  if (h->fd < 0) { SIMPLE(OP_LSEEK, req, ino, NULL, NULL, h->jsfh, (double)off, whence, 0); return; }
  atomic_fetch_add(&SESSION(req)->c_ops, 1);
  off_t res = lseek(h->fd, off, whence);
  if (res < 0) fuse_reply_err(req, errno);
  else fuse_reply_lseek(req, res);
}

static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
                               struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
                               struct fuse_file_info *fi_out, size_t len, int flags) {
  COUNT(req, CNT_COPY_FILE_RANGE);
  if (!fi_in->fh || !fi_out->fh) { fuse_reply_err(req, EOPNOTSUPP); return; }
  fhandle_t *a = FH(fi_in), *b = FH(fi_out);
  // Without two backing fds the kernel falls back to a read/write copy on EOPNOTSUPP.
  if (a->fd < 0 || b->fd < 0) { fuse_reply_err(req, EOPNOTSUPP); return; }
  atomic_fetch_add(&SESSION(req)->c_ops, 1);
  loff_t oi = off_in, oo = off_out;
  ssize_t res = copy_file_range(a->fd, &oi, b->fd, &oo, len, (unsigned)flags);
  if (res < 0) fuse_reply_err(req, errno);
  else fuse_reply_write(req, (size_t)res);
}

// ---- directories and the rest of the control plane

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  COUNT(req, OP_OPENDIR);
  SIMPLE(OP_OPENDIR, req, ino, NULL, NULL, fi->flags, 0, 0, 0);
}
static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  COUNT(req, OP_READDIR);
  SIMPLE(OP_READDIR, req, ino, NULL, NULL, (double)fi->fh, (double)size, (double)off, 0);
}
static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi) {
  COUNT(req, OP_READDIRPLUS);
  SIMPLE(OP_READDIRPLUS, req, ino, NULL, NULL, (double)fi->fh, (double)size, (double)off, 0);
}
static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  COUNT(req, OP_RELEASEDIR);
  SIMPLE(OP_RELEASEDIR, req, ino, NULL, NULL, (double)fi->fh, 0, 0, 0);
}
static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  COUNT(req, OP_FSYNCDIR);
  SIMPLE(OP_FSYNCDIR, req, ino, NULL, NULL, (double)fi->fh, datasync, 0, 0);
}
static void op_statfs(fuse_req_t req, fuse_ino_t ino) {
  COUNT(req, OP_STATFS);
  SIMPLE(OP_STATFS, req, ino, NULL, NULL, 0, 0, 0, 0);
}
// ---- getxattr(security.capability) in C
//
// The kernel asks for security.capability before every write(2) and truncate of a file (to drop
// file capabilities; FUSE does not cache the answer), almost always to hear ENODATA. With
// capCache (mount option), C remembers per inode that it has none and answers ENODATA itself.
// Learned from the filesystem's own answers: an ENODATA reply to a getxattr(security.capability)
// that went to JS marks the inode, unless something may have given an inode a capability since
// the request arrived (cap_epoch: setxattr/removexattr of that name, capForget from TS); TS may
// also mark an inode it knows has none (a file it just created: capNone). An inode is unmarked at
// setxattr/removexattr of the name, at forget (its node id may be reused), and all are when TS
// says the view changed (capForget(0)).
#define CAP_NAME "security.capability"

typedef struct cap_wait {
  fuse_req_t req;
  fuse_ino_t ino;
  uint64_t epoch;
  struct cap_wait *next;
} cap_wait_t;

static fuse_ino_t *cap_slot(session_t *s, fuse_ino_t ino) {
  size_t mask = s->cap_cap - 1;
  for (size_t i = (size_t)(ino * 0x9E3779B97F4A7C15ull) & mask;; i = (i + 1) & mask)
    if (s->cap_tab[i] == ino || s->cap_tab[i] == 0) return &s->cap_tab[i];
}

// cap_lock held
static void cap_insert_locked(session_t *s, fuse_ino_t ino) {
  if ((s->cap_used + 1) * 2 > s->cap_cap) {
    size_t ocap = s->cap_cap, ncap = ocap ? ocap * 2 : 1024;
    fuse_ino_t *old = s->cap_tab, *nt = calloc(ncap, sizeof *nt);
    if (!nt) return;  // not remembered: the next ask goes to JS
    s->cap_tab = nt;
    s->cap_cap = ncap;
    for (size_t i = 0; i < ocap; i++) if (old[i]) *cap_slot(s, old[i]) = old[i];
    free(old);
  }
  fuse_ino_t *e = cap_slot(s, ino);
  if (!*e) { *e = ino; s->cap_used++; }
}

// cap_lock held
static void cap_remove_locked(session_t *s, fuse_ino_t ino) {
  if (!s->cap_used) return;
  fuse_ino_t *e = cap_slot(s, ino);
  if (!*e) return;
  *e = 0;
  s->cap_used--;
  size_t mask = s->cap_cap - 1;
  for (size_t j = ((size_t)(e - s->cap_tab) + 1) & mask; s->cap_tab[j]; j = (j + 1) & mask) {
    fuse_ino_t k = s->cap_tab[j];
    s->cap_tab[j] = 0;
    *cap_slot(s, k) = k;  // backward shift: re-place the rest of the cluster
  }
}

static void cap_forget(session_t *s, fuse_ino_t ino) {
  if (!s->cap_cache) return;
  pthread_mutex_lock(&s->cap_lock);
  cap_remove_locked(s, ino);
  pthread_mutex_unlock(&s->cap_lock);
}

// setxattr/removexattr of security.capability is on its way to JS
static void cap_changing(session_t *s, fuse_ino_t ino, const char *name) {
  if (!s->cap_cache || strcmp(name, CAP_NAME) != 0) return;
  pthread_mutex_lock(&s->cap_lock);
  cap_remove_locked(s, ino);
  s->cap_epoch++;
  pthread_mutex_unlock(&s->cap_lock);
}

// 1: answered here (ENODATA); 0: goes to JS (recorded, so its ENODATA answer can be remembered)
static int cap_getxattr(session_t *s, fuse_req_t req, fuse_ino_t ino, const char *name) {
  if (!s->cap_cache || strcmp(name, CAP_NAME) != 0) return 0;
  pthread_mutex_lock(&s->cap_lock);
  int none = s->cap_used && *cap_slot(s, ino) == ino;
  if (!none) {
    cap_wait_t *w = malloc(sizeof *w);
    if (w) { w->req = req; w->ino = ino; w->epoch = s->cap_epoch; w->next = s->cap_waits; s->cap_waits = w; }
  }
  pthread_mutex_unlock(&s->cap_lock);
  if (!none) return 0;
  atomic_fetch_add(&s->c_ops, 1);
  fuse_reply_err(req, ENODATA);
  return 1;
}

// Every JS answer to a request goes through here before it is sent (the req is still valid).
static void cap_answered(session_t *s, fuse_req_t req, int err) {
  if (!s->cap_cache) return;
  pthread_mutex_lock(&s->cap_lock);
  for (cap_wait_t **p = &s->cap_waits; *p; p = &(*p)->next) {
    if ((*p)->req != req) continue;
    cap_wait_t *w = *p;
    *p = w->next;
    if (err == ENODATA && w->epoch == s->cap_epoch) cap_insert_locked(s, w->ino);
    free(w);
    break;
  }
  pthread_mutex_unlock(&s->cap_lock);
}


static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags) {
  COUNT(req, OP_SETXATTR);
  cap_changing(SESSION(req), ino, name);
  msg_t *m = req_msg(req, OP_SETXATTR, ino, name, NULL, size);
  if (!m) return;
  if (size) memcpy(m->data, value, size);
  else m->data = m->tail + m->name_len;  // an empty value is still a value
  m->a[0] = flags;
  to_js(SESSION(req), m);
}
static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  COUNT(req, OP_GETXATTR);
  if (cap_getxattr(SESSION(req), req, ino, name)) return;
  SIMPLE(OP_GETXATTR, req, ino, name, NULL, (double)size, 0, 0, 0);
}
static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  COUNT(req, OP_LISTXATTR);
  SIMPLE(OP_LISTXATTR, req, ino, NULL, NULL, (double)size, 0, 0, 0);
}
static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) {
  COUNT(req, OP_REMOVEXATTR);
  cap_changing(SESSION(req), ino, name);
  SIMPLE(OP_REMOVEXATTR, req, ino, name, NULL, 0, 0, 0, 0);
}
static void op_access(fuse_req_t req, fuse_ino_t ino, int mask) {
  COUNT(req, OP_ACCESS);
  SIMPLE(OP_ACCESS, req, ino, NULL, NULL, mask, 0, 0, 0);
}

static const struct fuse_lowlevel_ops ll_ops = {
  .init = op_init,
  .lookup = op_lookup,
  .forget = op_forget,
  .forget_multi = op_forget_multi,
  .getattr = op_getattr,
  .setattr = op_setattr,
  .readlink = op_readlink,
  .mknod = op_mknod,
  .mkdir = op_mkdir,
  .unlink = op_unlink,
  .rmdir = op_rmdir,
  .symlink = op_symlink,
  .rename = op_rename,
  .link = op_link,
  .open = op_open,
  .create = op_create,
  .read = op_read,
  .write_buf = op_write_buf,
  .flush = op_flush,
  .release = op_release,
  .fsync = op_fsync,
  .opendir = op_opendir,
  .readdir = op_readdir,
  .readdirplus = op_readdirplus,
  .releasedir = op_releasedir,
  .fsyncdir = op_fsyncdir,
  .statfs = op_statfs,
  .setxattr = op_setxattr,
  .getxattr = op_getxattr,
  .listxattr = op_listxattr,
  .removexattr = op_removexattr,
  .access = op_access,
  .fallocate = op_fallocate,
  .copy_file_range = op_copy_file_range,
  .lseek = op_lseek,
};

// ---------------------------------------------------------------- request counts file

// Writes {"requests": {kind: n}, "js": {kind: n}} (non-zero kinds only) to a temp file and renames
// it over counts_path, so a reader sees one whole snapshot or the previous one.
static void counts_write_locked(session_t *s);
static void counts_write(session_t *s) {
  pthread_mutex_lock(&s->counts_lock);
  counts_write_locked(s);
  pthread_mutex_unlock(&s->counts_lock);
}

static void counts_write_locked(session_t *s) {
  size_t plen = strlen(s->counts_path);
  char *tmp = malloc(plen + 8);
  if (!tmp) return;
  memcpy(tmp, s->counts_path, plen);
  memcpy(tmp + plen, ".tmp", 5);
  FILE *f = fopen(tmp, "w");
  if (!f) { free(tmp); return; }
  for (int part = 0; part < 2; part++) {
    atomic_ullong *c = part ? s->js_count : s->req_count;
    fputs(part ? ", \"js\": {" : "{\"requests\": {", f);
    int first = 1;
    for (int i = 0; i < CNT_N; i++) {
      unsigned long long n = atomic_load_explicit(&c[i], memory_order_relaxed);
      if (!n || !cnt_names[i]) continue;
      fprintf(f, "%s\"%s\": %llu", first ? "" : ", ", cnt_names[i], n);
      first = 0;
    }
    fputc('}', f);
  }
  fputs("}\n", f);
  if (fclose(f) == 0) rename(tmp, s->counts_path);
  else unlink(tmp);
  free(tmp);
}

static unsigned long long counts_total(session_t *s) {
  unsigned long long t = 0;
  for (int i = 0; i < CNT_N; i++)
    t += atomic_load_explicit(&s->req_count[i], memory_order_relaxed) + atomic_load_explicit(&s->js_count[i], memory_order_relaxed);
  return t;
}

// A thread of its own rewrites the file within 20 ms of any change (no signal: the TS server
// already uses SIGUSR2), so a reader that sees it unchanged for a while has every request so far.
static void *counts_main(void *arg) {
  session_t *s = arg;
  unsigned long long last = ~0ull;
  struct timespec tick = {0, 20 * 1000 * 1000};
  while (!atomic_load(&s->counts_stop)) {
    unsigned long long t = counts_total(s);
    if (t != last) { counts_write(s); last = t; }
    nanosleep(&tick, NULL);
  }
  return NULL;
}

// ---------------------------------------------------------------- JS side of dispatch

static atomic_int notifying;  // notifications in flight, all sessions: none is destroyed under one

static void session_finish(session_t *s) {
  // JS thread, loop ended and nothing pending: tear down and let Node exit.
  if (s->finished) return;
  s->finished = 1;
  if (s->counts_path) { atomic_store(&s->counts_stop, 1); counts_write(s); }  // the last word
  fuse_session_unmount(s->se);  // no-op when the connection is already gone
  fuse_session_destroy(s->se);
  s->se = NULL;
  pthread_rwlock_wrlock(&s->open_lock);
  openable_t *tab = s->open_tab;
  size_t cap = s->open_cap;
  s->open_tab = NULL;
  s->open_cap = s->open_used = 0;
  pthread_rwlock_unlock(&s->open_lock);
  for (size_t i = 0; i < cap; i++) if (tab[i].ino) { free(tab[i].path); bfd_put(s, tab[i].bfd); bfd_put(s, tab[i].wbfd); }
  free(tab);
  pthread_mutex_lock(&s->cap_lock);
  free(s->cap_tab);
  s->cap_tab = NULL;
  s->cap_cap = s->cap_used = 0;
  while (s->cap_waits) { cap_wait_t *w = s->cap_waits; s->cap_waits = w->next; free(w); }
  pthread_mutex_unlock(&s->cap_lock);
  pthread_rwlock_wrlock(&s->attr_lock);
  attrsrc_clear_locked(s);
  pthread_rwlock_unlock(&s->attr_lock);
  napi_release_threadsafe_function(s->tsfn, napi_tsfn_release);
}

static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  session_t *s = context;
  msg_t *m = data;
  if (env == NULL || cb == NULL) {  // tearing down
    if (m->req) { cap_answered(s, m->req, EIO); fuse_reply_err(m->req, EIO); atomic_fetch_sub(&s->pending, 1); }
    free(m);
    return;
  }
  napi_value argv[14], undef;
  napi_get_undefined(env, &undef);
  napi_create_uint32(env, (uint32_t)m->op, &argv[0]);
  napi_create_double(env, (double)(uintptr_t)m->req, &argv[1]);
  napi_create_double(env, m->ino, &argv[2]);
  for (int i = 0; i < 4; i++) napi_create_double(env, m->a[i], &argv[3 + i]);
  if (m->name) napi_create_buffer_copy(env, m->name_len, m->name, NULL, &argv[7]); else argv[7] = undef;
  if (m->name2) napi_create_buffer_copy(env, m->name2_len, m->name2, NULL, &argv[8]); else argv[8] = undef;
  if (m->data) napi_create_buffer_copy(env, m->data_len, m->data, NULL, &argv[9]); else argv[9] = undef;
  napi_create_uint32(env, m->uid, &argv[10]);
  napi_create_uint32(env, m->gid, &argv[11]);
  napi_create_uint32(env, m->pid, &argv[12]);
  napi_create_uint32(env, m->umask, &argv[13]);
  int op = m->op;
  free(m);
  napi_call_function(env, undef, cb, 14, argv, NULL);
  if (op == OP_EXIT) {
    s->loop_done = 1;
    if (atomic_load(&s->pending) == 0 && atomic_load(&notifying) == 0) session_finish(s);
  }
}

static void *loop_main(void *arg) {
  session_t *s = arg;
  struct fuse_loop_config *cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(cfg, (unsigned)s->clone_fd);
  fuse_loop_cfg_set_max_threads(cfg, s->max_threads);
  fuse_loop_cfg_set_idle_threads(cfg, s->max_idle);
  s->loop_rc = fuse_session_loop_mt(s->se, cfg);
  fuse_loop_cfg_destroy(cfg);
  msg_t *m = msg_new(OP_EXIT, NULL, 0, NULL, NULL, 0);
  if (m) {
    m->a[0] = s->loop_rc;
    to_js(s, m);
  }
  return NULL;
}

// ---------------------------------------------------------------- N-API helpers

#define CHECK(call)                                                              \
  do { if ((call) != napi_ok) { napi_throw_error(env, NULL, #call " failed"); return NULL; } } while (0)
#define ARGS(n)                                                                  \
  size_t argc = n;                                                               \
  napi_value argv[n];                                                            \
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL))

static fuse_req_t req_of(napi_env env, napi_value v) { return (fuse_req_t)(uintptr_t)num(env, v); }

// Every reply to a request that went to JS comes through here afterwards.
static void answered(fuse_req_t req_session_hint, session_t *s) {
  (void)req_session_hint;
  if (atomic_fetch_sub(&s->pending, 1) == 1 && s->loop_done && atomic_load(&notifying) == 0) session_finish(s);
}

static void attr_from(const double *a, struct stat *st) {
  memset(st, 0, sizeof *st);
  st->st_ino = (ino_t)a[0];
  st->st_mode = (mode_t)a[1];
  st->st_nlink = (nlink_t)a[2];
  st->st_uid = (uid_t)a[3];
  st->st_gid = (gid_t)a[4];
  st->st_rdev = (dev_t)a[5];
  st->st_size = (off_t)a[6];
  st->st_blocks = (blkcnt_t)a[7];
  st->st_blksize = (blksize_t)a[8];
  st->st_atim.tv_sec = (time_t)a[9];
  st->st_atim.tv_nsec = (long)a[10];
  st->st_mtim.tv_sec = (time_t)a[11];
  st->st_mtim.tv_nsec = (long)a[12];
  st->st_ctim.tv_sec = (time_t)a[13];
  st->st_ctim.tv_nsec = (long)a[14];
}

static void entry_from(const double *e, struct fuse_entry_param *p) {
  memset(p, 0, sizeof *p);
  p->ino = (fuse_ino_t)e[0];
  p->generation = (uint64_t)e[1];
  p->entry_timeout = e[2];
  p->attr_timeout = e[3];
  attr_from(e + 4, &p->attr);
}

#define OPEN_KEEP_CACHE 1
#define OPEN_DIRECT_IO 2
#define OPEN_NONSEEKABLE 4
#define OPEN_CACHE_READDIR 8
#define OPEN_NOFLUSH 16

static int open_from(napi_env env, session_t *s, napi_value jsfh, napi_value fdv, napi_value flagsv,
                     struct fuse_file_info *fi, int is_dir) {
  double h = num(env, jsfh);
  int fd = (int)num(env, fdv);
  unsigned flags = (unsigned)num(env, flagsv);
  memset(fi, 0, sizeof *fi);
  fi->keep_cache = !!(flags & OPEN_KEEP_CACHE);
  fi->direct_io = !!(flags & OPEN_DIRECT_IO);
  fi->nonseekable = !!(flags & OPEN_NONSEEKABLE);
  fi->cache_readdir = !!(flags & OPEN_CACHE_READDIR);
  fi->noflush = !!(flags & OPEN_NOFLUSH) || (s->no_flush && fd >= 0);
  if (is_dir) { fi->fh = (uint64_t)h; return 0; }
  // noOpen sessions: no handle at all (fh -1, no fd), the file is served by node. On a no_open
  // connection the kernel never releases the handle of a create, so a create must not leave one.
  if (s->no_open && h < 0 && fd < 0) { fi->fh = 0; return 0; }
  if (fd >= 0) {  // backing files are always read through the page cache
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_DIRECT)) fcntl(fd, F_SETFL, fl & ~O_DIRECT);
  }
  fhandle_t *fh = malloc(sizeof *fh);
  if (!fh) return ENOMEM;
  fh->fd = fd < 0 ? -1 : fd;
  fh->notify = 1;
  fh->jsfh = h;
  fh->bfd = NULL;
  fi->fh = (uint64_t)(uintptr_t)fh;
  return 0;
}

#define REPLY_PROLOGUE(n)                                                        \
  ARGS(n);                                                                       \
  fuse_req_t req = req_of(env, argv[0]);                                         \
  if (!req) { napi_throw_error(env, NULL, "no request"); return NULL; }          \
  session_t *s = fuse_req_userdata(req)

#define REPLY_EPILOGUE(rc)                                                       \
  answered(req, s);                                                              \
  napi_value r_;                                                                 \
  napi_create_int32(env, rc, &r_);                                               \
  return r_

// fuseReplyErr(req, errno)
static napi_value reply_err(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  cap_answered(s, req, (int)num(env, argv[1]));
  int rc = fuse_reply_err(req, (int)num(env, argv[1]));
  REPLY_EPILOGUE(rc);
}


// fuseReplyEntry(req, entry: Float64Array): also a negative entry when entry[0] (nodeid) is 0.
static napi_value reply_entry(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  const double *e = f64(env, argv[1], ENTRY_LEN);
  struct fuse_entry_param p;
  int rc;
  if (!e) rc = fuse_reply_err(req, EIO);
  else { entry_from(e, &p); rc = fuse_reply_entry(req, &p); }
  REPLY_EPILOGUE(rc);
}

// fuseReplyAttr(req, attr: Float64Array, timeout)
static napi_value reply_attr(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(3);
  const double *a = f64(env, argv[1], ATTR_LEN);
  struct stat st;
  int rc;
  if (!a) rc = fuse_reply_err(req, EIO);
  else { attr_from(a, &st); rc = fuse_reply_attr(req, &st, num(env, argv[2])); }
  REPLY_EPILOGUE(rc);
}

// fuseReplyOpen(req, fh, fd, flags, isDir). On failure (request interrupted) the fd is closed here and
// the negative errno returned: no release will come for this handle.
static napi_value reply_open(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(5);
  bool is_dir = false;
  napi_get_value_bool(env, argv[4], &is_dir);
  struct fuse_file_info fi;
  int rc = open_from(env, s, argv[1], argv[2], argv[3], &fi, is_dir);
  if (rc) rc = fuse_reply_err(req, rc);
  else {
    rc = fuse_reply_open(req, &fi);
    if (rc < 0 && !is_dir) { if (FH(&fi)->fd >= 0) close(FH(&fi)->fd); free(FH(&fi)); }
  }
  REPLY_EPILOGUE(rc);
}

// fuseReplyCreate(req, entry: Float64Array, fh, fd, flags)
static napi_value reply_create(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(5);
  const double *e = f64(env, argv[1], ENTRY_LEN);
  struct fuse_file_info fi;
  struct fuse_entry_param p;
  int rc = e ? open_from(env, s, argv[2], argv[3], argv[4], &fi, 0) : EIO;
  if (rc) rc = fuse_reply_err(req, rc);
  else {
    entry_from(e, &p);
    rc = fuse_reply_create(req, &p, &fi);
    if (rc < 0) { if (FH(&fi)->fd >= 0) close(FH(&fi)->fd); free(FH(&fi)); }
  }
  REPLY_EPILOGUE(rc);
}

// fuseReplyBuf(req, data: Buffer | Uint8Array): read, getxattr/listxattr contents
static napi_value reply_buf(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  cap_answered(s, req, 0);
  void *data = NULL;
  size_t len = 0;
  int rc;
  if (napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok) rc = fuse_reply_err(req, EIO);
  else rc = fuse_reply_buf(req, data, len);
  REPLY_EPILOGUE(rc);
}

// fuseReplyReadlink(req, target: Buffer)
static napi_value reply_readlink(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  void *data = NULL;
  size_t len = 0;
  int rc;
  char *z;
  if (napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok || !(z = malloc(len + 1)))
    rc = fuse_reply_err(req, EIO);
  else {
    memcpy(z, data, len);
    z[len] = 0;
    rc = fuse_reply_readlink(req, z);
    free(z);
  }
  REPLY_EPILOGUE(rc);
}

// fuseReplyWrite(req, count)
static napi_value reply_write(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  int rc = fuse_reply_write(req, (size_t)num(env, argv[1]));
  REPLY_EPILOGUE(rc);
}

// fuseReplyXattr(req, size): answer to a size query (getxattr/listxattr with size 0)
static napi_value reply_xattr(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  cap_answered(s, req, 0);
  int rc = fuse_reply_xattr(req, (size_t)num(env, argv[1]));
  REPLY_EPILOGUE(rc);
}

// fuseReplyLseek(req, offset)
static napi_value reply_lseek(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  int rc = fuse_reply_lseek(req, (off_t)num(env, argv[1]));
  REPLY_EPILOGUE(rc);
}

// fuseReplyStatfs(req, f: Float64Array [bsize frsize blocks bfree bavail files ffree favail fsid flag namemax])
static napi_value reply_statfs(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  const double *f = f64(env, argv[1], 11);
  int rc;
  if (!f) rc = fuse_reply_err(req, EIO);
  else {
    struct statvfs v = {0};
    v.f_bsize = (unsigned long)f[0]; v.f_frsize = (unsigned long)f[1];
    v.f_blocks = (fsblkcnt_t)f[2]; v.f_bfree = (fsblkcnt_t)f[3]; v.f_bavail = (fsblkcnt_t)f[4];
    v.f_files = (fsfilcnt_t)f[5]; v.f_ffree = (fsfilcnt_t)f[6]; v.f_favail = (fsfilcnt_t)f[7];
    v.f_fsid = (unsigned long)f[8]; v.f_flag = (unsigned long)f[9]; v.f_namemax = (unsigned long)f[10];
    rc = fuse_reply_statfs(req, &v);
  }
  REPLY_EPILOGUE(rc);
}

// fuseReplyDir(req, plus, size, names: Buffer, dirents: Float64Array, count) -> entries sent.
// Entries are packed until the kernel's buffer (size) is full; the caller learns how many went out,
// which matters for readdirplus: each sent entry (but "." and "..") counts as a lookup.
static napi_value reply_dir(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(6);
  bool plus = false;
  napi_get_value_bool(env, argv[1], &plus);
  size_t size = (size_t)num(env, argv[2]);
  size_t count = (size_t)num(env, argv[5]);
  char *names = NULL;
  size_t names_len = 0;
  const double *d = count ? f64(env, argv[4], count * DIRENT_LEN) : NULL;
  char *buf = malloc(size ? size : 1);
  int rc;
  int32_t sent = 0;
  if (!buf || (count && (!d || napi_get_buffer_info(env, argv[3], (void **)&names, &names_len) != napi_ok))) {
    rc = fuse_reply_err(req, EIO);
  } else {
    size_t used = 0, name_off = 0;
    char name[4097];
    for (size_t i = 0; i < count; i++) {
      const double *de = d + i * DIRENT_LEN;
      size_t nl = (size_t)de[0];
      if (nl > 4096 || name_off + nl > names_len) break;
      memcpy(name, names + name_off, nl);
      name[nl] = 0;
      off_t next = (off_t)de[1];
      size_t want;
      if (plus) {
        struct fuse_entry_param p;
        entry_from(de + 2, &p);
        want = fuse_add_direntry_plus(req, buf + used, size - used, name, &p, next);
      } else {
        struct stat st;
        attr_from(de + 2 + 4, &st);
        want = fuse_add_direntry(req, buf + used, size - used, name, &st, next);
      }
      if (want > size - used) break;
      used += want;
      name_off += nl;
      sent++;
    }
    rc = fuse_reply_buf(req, buf, used);
  }
  free(buf);
  answered(req, s);
  napi_value r;
  napi_create_int32(env, rc < 0 ? rc : sent, &r);
  return r;
}

// ---------------------------------------------------------------- notifications (off the JS thread)

// A notification can wait on a kernel lock held by a request that is itself waiting for JS, so it
// runs on the libuv pool and resolves a promise.
typedef struct {
  session_t *s;
  int kind;  // 0 inval_inode, 1 inval_entry, 2 delete
  fuse_ino_t ino, child;
  off_t off, len;
  char *name;
  size_t name_len;
  int rc;
  napi_deferred deferred;
  napi_async_work work;
} notify_t;

static void notify_exec(napi_env env, void *data) {
  notify_t *n = data;
  struct fuse_session *se = n->s->se;
  if (!se) { n->rc = -ENOTCONN; return; }
  if (n->kind == 0) n->rc = fuse_lowlevel_notify_inval_inode(se, n->ino, n->off, n->len);
  else if (n->kind == 1) n->rc = fuse_lowlevel_notify_inval_entry(se, n->ino, n->name, n->name_len);
  else n->rc = fuse_lowlevel_notify_delete(se, n->ino, n->child, n->name, n->name_len);
}

static void notify_done(napi_env env, napi_status status, void *data) {
  notify_t *n = data;
  napi_value v;
  napi_create_int32(env, status == napi_ok ? n->rc : -EIO, &v);
  napi_resolve_deferred(env, n->deferred, v);
  napi_delete_async_work(env, n->work);
  session_t *s = n->s;
  free(n->name);
  free(n);
  atomic_fetch_sub(&notifying, 1);
  if (s->loop_done && atomic_load(&s->pending) == 0 && atomic_load(&notifying) == 0) session_finish(s);
}

// The session an argument holds; NULL after throwing a TypeError when it holds none.
static session_t *session_of(napi_env env, napi_value v) {
  session_t *s = NULL;
  napi_get_value_external(env, v, (void **)&s);
  if (!s) napi_throw_type_error(env, NULL, "not a session");
  return s;
}

// A Buffer argument's bytes; false (p, len untouched) for null or anything else.
static bool buffer_arg(napi_env env, napi_value v, void **p, size_t *len) {
  bool is_buf = false;
  napi_is_buffer(env, v, &is_buf);
  if (is_buf) napi_get_buffer_info(env, v, p, len);
  return is_buf;
}

// fuseNotify(session, kind, ino, off|child, len, name?) -> Promise<number> (0 or -errno)
static napi_value notify(napi_env env, napi_callback_info info) {
  ARGS(6);
  session_t *s = session_of(env, argv[0]);
  if (!s) return NULL;
  notify_t *n = calloc(1, sizeof *n);
  n->s = s;
  n->kind = (int)num(env, argv[1]);
  n->ino = (fuse_ino_t)num(env, argv[2]);
  n->off = (off_t)num(env, argv[3]);
  n->child = (fuse_ino_t)num(env, argv[3]);
  n->len = (off_t)num(env, argv[4]);
  void *nm;
  size_t nl;
  if (n->kind != 0 && napi_get_buffer_info(env, argv[5], &nm, &nl) == napi_ok) {
    n->name = malloc(nl + 1);
    memcpy(n->name, nm, nl);
    n->name[nl] = 0;
    n->name_len = nl;
  }
  napi_value promise, res_name;
  CHECK(napi_create_promise(env, &n->deferred, &promise));
  napi_create_string_utf8(env, "stratum:fuse-notify", NAPI_AUTO_LENGTH, &res_name);
  CHECK(napi_create_async_work(env, NULL, res_name, notify_exec, notify_done, n, &n->work));
  atomic_fetch_add(&notifying, 1);
  CHECK(napi_queue_async_work(env, n->work));
  return promise;
}

// ---------------------------------------------------------------- mount / unmount

static void session_release_js(napi_env env, void *data, void *hint) { (void)env; (void)data; (void)hint; }

// Unprivileged mount: fusermount3 (setuid root) opens /dev/fuse, mounts, and passes the fd back
// over a socket (_FUSE_COMMFD), as libfuse does; we do it ourselves so that a /dev/fuse the user
// cannot open (mode 0600) still works. Returns the /dev/fuse fd or -1.
extern char **environ;
static int receive_fd(int sock) {
  char byte;
  struct iovec iov = {&byte, 1};
  union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } ctl;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctl.buf;
  msg.msg_controllen = sizeof ctl.buf;
  ssize_t rv;
  while ((rv = recvmsg(sock, &msg, 0)) < 0 && errno == EINTR) {}
  if (rv <= 0) return -1;
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  if (!c || c->cmsg_type != SCM_RIGHTS) return -1;
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

static int fusermount_fd(const char *mnt, const char *opts) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) return -1;
  fcntl(sv[1], F_SETFD, FD_CLOEXEC);
  char env_fd[64];
  snprintf(env_fd, sizeof env_fd, "_FUSE_COMMFD=%d", sv[0]);
  size_t n = 0;
  while (environ[n]) n++;
  char **envp = calloc(n + 2, sizeof(char *));
  for (size_t i = 0; i < n; i++) envp[i] = environ[i];
  envp[n] = env_fd;
  char *argv[] = {"fusermount3", "-o", (char *)opts, "--", (char *)mnt, NULL};
  char *argv_noopts[] = {"fusermount3", "--", (char *)mnt, NULL};
  pid_t pid;
  int rc = posix_spawnp(&pid, "fusermount3", NULL, NULL, opts && *opts ? argv : argv_noopts, envp);
  free(envp);
  close(sv[0]);
  if (rc != 0) { close(sv[1]); errno = rc; return -1; }
  int fd = receive_fd(sv[1]);
  close(sv[1]);
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  if (fd >= 0) fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}

// fuseMount(mountpoint, options: string[], dispatcher, config: Float64Array
//           [cloneFd, maxThreads, maxIdleThreads, capsWant, capsClear, noFlush, capCache]) -> session
static napi_value mount_(napi_env env, napi_callback_info info) {
  ARGS(4);
  size_t len;
  char mnt[4096];
  CHECK(napi_get_value_string_utf8(env, argv[0], mnt, sizeof mnt, &len));
  uint32_t nopts = 0;
  CHECK(napi_get_array_length(env, argv[1], &nopts));
  const double *cfg = f64(env, argv[3], 8);
  if (!cfg) { napi_throw_type_error(env, NULL, "config must be a Float64Array(7)"); return NULL; }

  char **fargv = calloc(nopts + 2, sizeof(char *));
  fargv[0] = strdup("stratum");
  for (uint32_t i = 0; i < nopts; i++) {
    napi_value el;
    char tmp[4096];
    CHECK(napi_get_element(env, argv[1], i, &el));
    CHECK(napi_get_value_string_utf8(env, el, tmp, sizeof tmp, &len));
    fargv[i + 1] = strdup(tmp);
  }
  struct fuse_args args = FUSE_ARGS_INIT((int)nopts + 1, fargv);
  // the value after "-o", for fusermount3
  char *mount_opts = NULL;
  for (uint32_t i = 1; i + 1 < nopts + 1; i++)
    if (strcmp(fargv[i], "-o") == 0) { mount_opts = strdup(fargv[i + 1]); break; }

  session_t *s = calloc(1, sizeof *s);
  s->clone_fd = (int)cfg[0];
  s->max_threads = (unsigned)cfg[1];
  s->max_idle = (unsigned)cfg[2];
  s->caps_want = (unsigned)cfg[3];
  s->caps_clear = (unsigned)cfg[4];
  s->no_flush = cfg[5] != 0;
  s->no_open = cfg[6] != 0;
  pthread_rwlock_init(&s->open_lock, NULL);
  pthread_rwlockattr_t wa;  // the barrier must not starve behind a stream of writes
  pthread_rwlockattr_init(&wa);
  pthread_rwlockattr_setkind_np(&wa, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&s->write_lock, &wa);
  pthread_rwlockattr_destroy(&wa);
  pthread_mutex_init(&s->cap_lock, NULL);
  pthread_rwlock_init(&s->attr_lock, NULL);
  s->cap_cache = cfg[7] != 0;
  s->mountpoint = strdup(mnt);
  s->se = fuse_session_new(&args, &ll_ops, sizeof ll_ops, s);
  for (uint32_t i = 0; i < nopts + 1; i++) free(fargv[i]);
  free(fargv);
  if (!s->se) {
    free(mount_opts); free(s->mountpoint); free(s);
    napi_throw_error(env, "EINVAL", "fuse_session_new failed (bad mount options?)");
    return NULL;
  }
  int mounted;
  if (geteuid() == 0) mounted = fuse_session_mount(s->se, mnt);
  else {
    int fd = fusermount_fd(mnt, mount_opts);
    char devfd[32];
    snprintf(devfd, sizeof devfd, "/dev/fd/%d", fd);
    mounted = fd < 0 ? -1 : fuse_session_mount(s->se, devfd);
    if (mounted != 0 && fd >= 0) close(fd);
  }
  free(mount_opts);
  if (mounted != 0) {
    fuse_session_destroy(s->se);
    free(s->mountpoint); free(s);
    napi_throw_error(env, "EMOUNT", "fuse_session_mount failed (see stderr)");
    return NULL;
  }
  napi_value res_name;
  napi_create_string_utf8(env, "stratum:fuse", NAPI_AUTO_LENGTH, &res_name);
  if (napi_create_threadsafe_function(env, argv[2], NULL, res_name, 0, 1, NULL, NULL, s, call_js, &s->tsfn) !=
      napi_ok) {
    fuse_session_unmount(s->se);
    fuse_session_destroy(s->se);
    napi_throw_error(env, NULL, "napi_create_threadsafe_function failed");
    return NULL;
  }
  // before the loop starts, so its first request is counted too
  const char *counts = getenv("STRATUM_FUSE_COUNTS");
  if (counts && *counts) {
    pthread_t ct;
    pthread_mutex_init(&s->counts_lock, NULL);
    s->counts_path = strdup(counts);
    if (s->counts_path && pthread_create(&ct, NULL, counts_main, s) == 0) pthread_detach(ct);
  }
  if (pthread_create(&s->thread, NULL, loop_main, s) != 0) {
    fuse_session_unmount(s->se);
    fuse_session_destroy(s->se);
    atomic_store(&s->counts_stop, 1);
    napi_release_threadsafe_function(s->tsfn, napi_tsfn_abort);
    napi_throw_error(env, NULL, "pthread_create failed");
    return NULL;
  }
  pthread_detach(s->thread);
  napi_value ext;
  CHECK(napi_create_external(env, s, session_release_js, NULL, &ext));
  return ext;
}

// fuseUnmount(session) -> 0, or -errno (-EPERM when not root: the caller runs fusermount3 -uz).
// A lazy unmount: the kernel drops the connection once nothing uses the mount, the loop then ends
// and the exit callback runs.
static napi_value unmount_(napi_env env, napi_callback_info info) {
  ARGS(1);
  session_t *s = session_of(env, argv[0]);
  int rc = 0;
  if (!s) return NULL;
  if (s->loop_done) rc = 0;
  else if (geteuid() != 0) rc = -EPERM;
  else if (umount2(s->mountpoint, MNT_DETACH) < 0) rc = -errno;
  napi_value r;
  napi_create_int32(env, rc, &r);
  return r;
}

static void openable_insert(session_t *s, openable_t e) {
  if ((s->open_used + 1) * 2 > s->open_cap) {
    size_t ncap = s->open_cap ? s->open_cap * 2 : 1024;
    openable_t *nt = calloc(ncap, sizeof *nt), *old = s->open_tab;
    size_t ocap = s->open_cap;
    s->open_tab = nt;
    s->open_cap = ncap;
    s->open_used = 0;
    for (size_t i = 0; i < ocap; i++) if (old[i].ino) openable_insert(s, old[i]);
    free(old);
  }
  size_t mask = s->open_cap - 1;
  for (size_t i = (size_t)(e.ino * 0x9E3779B97F4A7C15ull) & mask;; i = (i + 1) & mask) {
    if (s->open_tab[i].ino == e.ino) { free(s->open_tab[i].path); s->open_tab[i] = e; return; }
    if (s->open_tab[i].ino == 0) { s->open_tab[i] = e; s->open_used++; return; }
  }
}

static void openable_remove(session_t *s, fuse_ino_t ino) {
  openable_t *o = openable_find(s, ino);
  if (!o) return;
  free(o->path);
  o->path = NULL;
  size_t mask = s->open_cap - 1, i = (size_t)(o - s->open_tab);
  o->ino = 0;
  s->open_used--;
  // backward-shift: re-insert the rest of the cluster
  for (size_t j = (i + 1) & mask; s->open_tab[j].ino; j = (j + 1) & mask) {
    openable_t e = s->open_tab[j];
    s->open_tab[j].ino = 0;
    s->open_tab[j].path = NULL;
    s->open_used--;
    openable_insert(s, e);
  }
}

// fuseSetOpenable(session, ino, path: Buffer | null, backingIno, flags, writeFd = -1): with a path,
// opens of ino are served in C (no JS) while the path leads to a regular file with st_ino
// backingIno; null removes. writeFd (OPENABLE_WRITABLE): an fd open for writing on that file that C
// takes over as the inode's writable backing (a file created read-only can still be written
// through it, as through the creator's fd); C closes it when it cannot keep it.
static napi_value set_openable(napi_env env, napi_callback_info info) {
  ARGS(6);
  int wfd = -1;
  napi_valuetype wt = napi_undefined;
  if (argc >= 6 && napi_typeof(env, argv[5], &wt) == napi_ok && wt == napi_number) wfd = (int)num(env, argv[5]);
  session_t *s = session_of(env, argv[0]);
  if (!s) return NULL;
  fuse_ino_t ino = (fuse_ino_t)num(env, argv[1]);
  void *p = NULL;
  size_t len = 0;
  bool is_buf = buffer_arg(env, argv[2], &p, &len);
  pthread_rwlock_wrlock(&s->open_lock);
  // the inode's backing changed (or it is forgotten): its cached fd goes, closed after the unlock
  openable_t *old = openable_find(s, ino);
  bfd_t *drop = old ? old->bfd : NULL, *wdrop = old ? old->wbfd : NULL;
  if (old) old->bfd = old->wbfd = NULL;
  bfd_t *given = NULL;
  if (!is_buf || s->finished) openable_remove(s, ino);
  else {
    unsigned flags = (unsigned)num(env, argv[4]);
    if (s->writes_held) flags &= ~OPENABLE_WRITABLE;  // (TS knows; C makes sure)
    if (wfd >= 0 && (flags & OPENABLE_WRITABLE) && atomic_load(&s->inode_fds) < INODE_FD_MAX && (given = malloc(sizeof *given))) {
      // every writer of the inode shares it and writes at the kernel's offsets: no O_APPEND
      int fl = fcntl(wfd, F_GETFL);
      if (fl >= 0 && (fl & (O_APPEND | O_DIRECT))) fcntl(wfd, F_SETFL, fl & ~(O_APPEND | O_DIRECT));
      given->fd = wfd;
      atomic_init(&given->refs, 1);  // the table's
      atomic_fetch_add(&s->inode_fds, 1);
      wfd = -1;
    }
    openable_t e = {ino, num(env, argv[3]), flags, malloc(len + 1), NULL, given,
                    atomic_fetch_add(&s->open_gen, 1) + 1};
    memcpy(e.path, p, len);
    e.path[len] = 0;
    openable_insert(s, e);
  }
  pthread_rwlock_unlock(&s->open_lock);
  bfd_put(s, drop);
  bfd_put(s, wdrop);
  if (wfd >= 0) close(wfd);  // not kept
  return NULL;
}

// fuseHoldWrites(session, held): true = the write barrier: waits for every C write by inode in
// progress, closes every writable backing fd and unmarks them, and sends later writes by inode to
// TS until fuseHoldWrites(session, false). Runs on the JS thread; waits only for writes already
// in a syscall.
static napi_value hold_writes(napi_env env, napi_callback_info info) {
  ARGS(2);
  session_t *s = session_of(env, argv[0]);
  if (!s) return NULL;
  bool held = false;
  napi_get_value_bool(env, argv[1], &held);
  pthread_rwlock_wrlock(&s->write_lock);
  s->writes_held = held;
  bfd_t **drop = NULL;
  size_t n = 0;
  if (held) {
    pthread_rwlock_wrlock(&s->open_lock);
    drop = calloc(s->open_cap ? s->open_cap : 1, sizeof *drop);
    for (size_t i = 0; i < s->open_cap; i++) {
      openable_t *o = &s->open_tab[i];
      if (!o->ino) continue;
      o->flags &= ~OPENABLE_WRITABLE;
      if (o->wbfd) { if (drop) drop[n++] = o->wbfd; else bfd_put(s, o->wbfd); o->wbfd = NULL; }
    }
    pthread_rwlock_unlock(&s->open_lock);
  }
  pthread_rwlock_unlock(&s->write_lock);
  for (size_t i = 0; i < n; i++) bfd_put(s, drop[i]);
  free(drop);
  return NULL;
}

// fuseCapability(session, ino, none): none = true: ino has no security.capability (TS knows: it
// just created the file); false: forget what is known about ino, or about every inode (ino 0).
static napi_value cap_set(napi_env env, napi_callback_info info) {
  ARGS(3);
  session_t *s = session_of(env, argv[0]);
  if (!s) return NULL;
  fuse_ino_t ino = (fuse_ino_t)num(env, argv[1]);
  bool none = false;
  napi_get_value_bool(env, argv[2], &none);
  if (!s->cap_cache || s->finished) return NULL;
  pthread_mutex_lock(&s->cap_lock);
  if (none && ino) cap_insert_locked(s, ino);
  else if (ino) { cap_remove_locked(s, ino); s->cap_epoch++; }
  else {
    if (s->cap_tab) memset(s->cap_tab, 0, s->cap_cap * sizeof *s->cap_tab);
    s->cap_used = 0;
    s->cap_epoch++;
  }
  pthread_mutex_unlock(&s->cap_lock);
  return NULL;
}

// fuseSetAttrSource(session, ino, path: Buffer | null, backingIno, stIno, timeout, flags): with a
// path, getattr(ino) is answered in C while path leads to backingIno; null removes ino; ino 0 and
// null remove every inode (returns once no C answer from the old table is in progress).
static napi_value set_attr_source(napi_env env, napi_callback_info info) {
  ARGS(7);
  session_t *s = session_of(env, argv[0]);
  if (!s) return NULL;
  fuse_ino_t ino = (fuse_ino_t)num(env, argv[1]);
  void *p = NULL;
  size_t len = 0;
  bool is_buf = buffer_arg(env, argv[2], &p, &len);
  pthread_rwlock_wrlock(&s->attr_lock);
  if (!is_buf && ino == 0) attrsrc_clear_locked(s);
  else if (!is_buf || s->finished || len >= PATH_MAX || memchr(p, 0, len)) attrsrc_remove_locked(s, ino);
  else {
    attr_src_t e = {ino, num(env, argv[3]), num(env, argv[4]), num(env, argv[5]), (unsigned)num(env, argv[6]), malloc(len + 1)};
    if (e.path) {
      memcpy(e.path, p, len);
      e.path[len] = 0;
      attrsrc_insert_locked(s, e);
    }
  }
  pthread_rwlock_unlock(&s->attr_lock);
  return NULL;
}

// fuseStats(session) -> [requests to JS, requests served in C, pending in JS, capable, want]
static napi_value stats(napi_env env, napi_callback_info info) {
  ARGS(1);
  session_t *s = session_of(env, argv[0]);
  if (!s) return NULL;
  napi_value arr, v;
  napi_create_array_with_length(env, 5, &arr);
  double vals[5] = {(double)atomic_load(&s->js_ops), (double)atomic_load(&s->c_ops),
                    (double)atomic_load(&s->pending), s->capable, s->want};
  for (uint32_t i = 0; i < 5; i++) { napi_create_double(env, vals[i], &v); napi_set_element(env, arr, i, v); }
  return arr;
}

void fuse_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"fuseMount", NULL, mount_, NULL, NULL, NULL, napi_default, NULL},
    {"fuseUnmount", NULL, unmount_, NULL, NULL, NULL, napi_default, NULL},
    {"fuseStats", NULL, stats, NULL, NULL, NULL, napi_default, NULL},
    {"fuseSetOpenable", NULL, set_openable, NULL, NULL, NULL, napi_default, NULL},
    {"fuseHoldWrites", NULL, hold_writes, NULL, NULL, NULL, napi_default, NULL},
    {"fuseCapability", NULL, cap_set, NULL, NULL, NULL, napi_default, NULL},
    {"fuseSetAttrSource", NULL, set_attr_source, NULL, NULL, NULL, napi_default, NULL},
    {"fuseNotify", NULL, notify, NULL, NULL, NULL, napi_default, NULL},
    {"fuseReplyErr", NULL, reply_err, NULL, NULL, NULL, napi_default, NULL},
    {"fuseReplyEntry", NULL, reply_entry, NULL, NULL, NULL, napi_default, NULL},
    {"fuseReplyAttr", NULL, reply_attr, NULL, NULL, NULL, napi_default, NULL},
    {"fuseReplyOpen", NULL, reply_open, NULL, NULL, NULL, napi_default, NULL},
    {"fuseReplyCreate", NULL, reply_create, NULL, NULL, NULL, napi_default, NULL},
    {"fuseReplyBuf", NULL, reply_buf, NULL, NULL, NULL, napi_default, NULL},
    {"fuseReplyReadlink", NULL, reply_readlink, NULL, NULL, NULL, napi_default, NULL},
    {"fuseReplyWrite", NULL, reply_write, NULL, NULL, NULL, napi_default, NULL},
    {"fuseReplyXattr", NULL, reply_xattr, NULL, NULL, NULL, napi_default, NULL},
    {"fuseReplyLseek", NULL, reply_lseek, NULL, NULL, NULL, napi_default, NULL},
    {"fuseReplyStatfs", NULL, reply_statfs, NULL, NULL, NULL, napi_default, NULL},
    {"fuseReplyDir", NULL, reply_dir, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  fuse_backing_register(env, exports);
}
