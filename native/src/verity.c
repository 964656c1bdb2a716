// The fs-verity sha256 digest (4 KiB blocks, no salt) in C, with the OpenSSL that Node itself
// links and exports (SHA-NI where the CPU has it). src/store/digest.ts holds the same algorithm in
// TypeScript for streams and as the reference; this file exists because hashing 1 GiB as 262 144
// calls from JavaScript costs as much as copying it, and here it runs on a pool thread beside
// the kernel's copy (bench/store.ts). It also hashes the levels of a commit's Merkle tree
// (merkleLevel below), for the same reason: 100k nodes are 100k calls from JavaScript.
//
// The low-level SHA256_Init/Update/Final (deprecated in OpenSSL 3, still exported by Node) are
// used rather than SHA256(), which in OpenSSL 3 goes through EVP_Q_digest and fetches the
// algorithm on every call: for 65-byte Merkle nodes that triples the time (bench/merkle.ts).
#define OPENSSL_SUPPRESS_DEPRECATED
#include "verity.h"
#include "sys.h"
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/stat.h>
#include <openssl/sha.h>

#define BLOCK 4096
#define HASH 32
#define READ_CHUNK (1 << 20)

typedef struct {
  uint8_t *hashes; // leaf hashes, HASH bytes each
  size_t count, cap;
  uint64_t size;
} leaves;

static int leaves_add(leaves *l, const uint8_t *block, size_t len) {
  if (l->count == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 256;
    uint8_t *grown = realloc(l->hashes, cap * HASH);
    if (!grown) return ENOMEM;
    l->hashes = grown;
    l->cap = cap;
  }
  if (len < BLOCK) {
    uint8_t padded[BLOCK] = {0};
    memcpy(padded, block, len);
    SHA256(padded, BLOCK, l->hashes + l->count * HASH);
  } else {
    SHA256(block, BLOCK, l->hashes + l->count * HASH);
  }
  l->count++;
  return 0;
}

static int leaves_feed(leaves *l, const uint8_t *data, size_t len) {
  for (size_t off = 0; off < len; off += BLOCK) {
    int err = leaves_add(l, data + off, len - off < BLOCK ? len - off : BLOCK);
    if (err) return err;
  }
  l->size += len;
  return 0;
}

// Packs hashes into 4 KiB blocks level by level (in place) until one remains, then hashes the
// 256-byte fsverity_descriptor. Writes 64 hex characters and a NUL to hex.
static void leaves_finish(leaves *l, char hex[65]) {
  uint8_t root[HASH] = {0};
  if (l->size > 0) {
    size_t n = l->count;
    while (n > 1) {
      size_t out = 0;
      for (size_t i = 0; i < n; i += BLOCK / HASH, out++) {
        uint8_t block[BLOCK] = {0};
        size_t take = n - i < BLOCK / HASH ? n - i : BLOCK / HASH;
        memcpy(block, l->hashes + i * HASH, take * HASH);
        SHA256(block, BLOCK, l->hashes + out * HASH);
      }
      n = out;
    }
    memcpy(root, l->hashes, HASH);
  }
  uint8_t desc[256] = {0};
  desc[0] = 1;  // version
  desc[1] = 1;  // FS_VERITY_HASH_ALG_SHA256
  desc[2] = 12; // log2(4096)
  for (int i = 0; i < 8; i++) desc[8 + i] = (uint8_t)(l->size >> (8 * i));
  memcpy(desc + 16, root, HASH);
  uint8_t digest[HASH];
  SHA256(desc, sizeof desc, digest);
  static const char *xd = "0123456789abcdef";
  for (int i = 0; i < HASH; i++) {
    hex[2 * i] = xd[digest[i] >> 4];
    hex[2 * i + 1] = xd[digest[i] & 15];
  }
  hex[64] = 0;
}

// ---- digestFd(fd): reads from offset 0 to EOF with pread, on a pool thread --------------------

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd, err;
  char hex[65];
} fd_job;

// Hashes [start, end) of the file (end < 0: to end of file) into l, reading whole chunks (a
// multiple of BLOCK) so that only the chunk at end of file can end in a partial block, whatever
// sizes pread returns.
static int hash_range(int fd, off_t start, off_t end, leaves *l) {
  uint8_t *buf = malloc(READ_CHUNK);
  if (!buf) return ENOMEM;
  int err = 0;
  off_t off = start;
  for (bool eof = false; !err && !eof && (end < 0 || off < end);) {
    size_t want = end < 0 || end - off >= READ_CHUNK ? READ_CHUNK : (size_t)(end - off);
    size_t filled = 0;
    while (filled < want) {
      ssize_t n = pread(fd, buf + filled, want - filled, off + (off_t)filled);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        err = errno;
        break;
      }
      if (n == 0) {
        eof = true;
        break;
      }
      filled += (size_t)n;
    }
    if (!err && filled > 0) err = leaves_feed(l, buf, filled);
    off += (off_t)filled;
  }
  free(buf);
  return err;
}

typedef struct {
  int fd;
  off_t start;
  leaves l;
  int err;
} half_job;

static void *hash_second_half(void *arg) {
  half_job *h = arg;
  h->err = hash_range(h->fd, h->start, -1, &h->l);
  return NULL;
}

// Leaves are independent, so a large file is hashed by two threads, one per half (split on a
// chunk boundary), and the upper levels are built from both lists: this keeps the digest off the
// critical path of a put, where the kernel copies the same file at the same time.
#define SPLIT_ABOVE (64 << 20)

// The digest of fd's content into hex; 0 or an errno.
static int hash_fd(int fd, char hex[65]) {
  int err;
  leaves l = {0};
  struct stat st;
  off_t split = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > SPLIT_ABOVE ? (st.st_size / 2) / READ_CHUNK * READ_CHUNK : 0;
  pthread_t thread;
  half_job second = {.fd = fd, .start = split};
  bool threaded = split > 0 && pthread_create(&thread, NULL, hash_second_half, &second) == 0;
  err = hash_range(fd, 0, threaded ? split : -1, &l);
  if (threaded) {
    pthread_join(thread, NULL);
    if (!err) err = second.err;
    // the first half stopped short only if the file shrank under us: then the second is empty
    if (!err && second.l.count > 0) {
      if (l.size != (uint64_t)split) err = EAGAIN;
      else if (l.count + second.l.count > l.cap) {
        uint8_t *grown = realloc(l.hashes, (l.count + second.l.count) * HASH);
        if (!grown) err = ENOMEM;
        else {
          l.hashes = grown;
          l.cap = l.count + second.l.count;
        }
      }
      if (!err) {
        memcpy(l.hashes + l.count * HASH, second.l.hashes, second.l.count * HASH);
        l.count += second.l.count;
        l.size += second.l.size;
      }
    }
    free(second.l.hashes);
  }
  if (!err) leaves_finish(&l, hex);
  free(l.hashes);
  return err;
}

static void fd_execute(napi_env env, void *data) {
  (void)env;
  fd_job *job = data;
  job->err = hash_fd(job->fd, job->hex);
}

static napi_value undefined_value(napi_env env) {
  napi_value v;
  napi_get_undefined(env, &v);
  return v;
}

static void fd_complete(napi_env env, napi_status status, void *data) {
  fd_job *job = data;
  napi_value result;
  if (status == napi_ok && job->err == 0 && napi_create_string_latin1(env, job->hex, 64, &result) == napi_ok) {
    napi_resolve_deferred(env, job->deferred, result);
  } else {
    napi_value error = sys_error(env, status == napi_cancelled ? ECANCELED : job->err ? job->err : EIO, "read", NULL, NULL, NULL, NULL);
    napi_reject_deferred(env, job->deferred, error ? error : undefined_value(env));
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

static napi_value js_digest_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], promise, name;
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "digestFd(fd): fd must be a non-negative integer");
    return NULL;
  }
  fd_job *job = calloc(1, sizeof *job);
  if (!job) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  job->fd = fd;
  if (napi_create_string_utf8(env, "stratum:digestFd", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, fd_execute, fd_complete, job, &job->work) != napi_ok) {
    free(job);
    return NULL;
  }
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok || napi_queue_async_work(env, job->work) != napi_ok) {
    napi_delete_async_work(env, job->work);
    free(job);
    return NULL;
  }
  return promise;
}

// ---- digestBuffer(bytes) ------------------------------------------------------------------------

static napi_value js_digest_buffer(napi_env env, napi_callback_info info) {
  size_t argc = 1, len = 0;
  napi_value argv[1], result;
  void *data = NULL;
  bool is_typed = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc >= 1) napi_is_typedarray(env, argv[0], &is_typed);
  if (!is_typed) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "digestBuffer(bytes): bytes must be a Uint8Array");
    return NULL;
  }
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  if (napi_get_typedarray_info(env, argv[0], &type, &len, &data, &ab, &offset) != napi_ok) return NULL;
  if (type != napi_uint8_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "digestBuffer(bytes): bytes must be a Uint8Array");
    return NULL;
  }
  leaves l = {0};
  char hex[65];
  if (leaves_feed(&l, data, len) != 0) {
    free(l.hashes);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  leaves_finish(&l, hex);
  free(l.hashes);
  if (napi_create_string_latin1(env, hex, 64, &result) != napi_ok) return NULL;
  return result;
}

// ---- digestFdSync(fd) ----------------------------------------------------------------------------
// For callers already committed to blocking on the file (a FUSE copy-up copies it right after).

static napi_value js_digest_fd_sync(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  int32_t fd;
  char hex[65];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "digestFdSync(fd): fd must be a non-negative integer");
    return NULL;
  }
  int err = hash_fd(fd, hex);
  if (err) {
    napi_value error = sys_error(env, err, "read", NULL, NULL, NULL, NULL);
    if (error) napi_throw(env, error);
    return NULL;
  }
  if (napi_create_string_latin1(env, hex, 64, &result) != napi_ok) return NULL;
  return result;
}

// ---- merkleLevel(level, next, from, to) ---------------------------------------------------------
// One level of an RFC 6962 tree from the level below, both flat (32 bytes a node): node i of
// next is sha256(0x01 ‖ level[2i] ‖ level[2i+1]), or level[2i] itself when it has no right
// neighbour (the odd last node is carried up). Only nodes from <= i < to are written, so a caller
// keeps nodes it already has (a base tree's, or all but one path's). src/store/merkle.ts.

static bool typed_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is_typed = false;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  void *p;
  if (napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed) return false;
  if (napi_get_typedarray_info(env, v, &type, len, &p, &ab, &offset) != napi_ok || type != napi_uint8_array) return false;
  *data = p;
  return true;
}

static bool index_arg(napi_env env, napi_value v, size_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0) || d > 4294967295.0 || d != (double)(size_t)d) return false;
  *out = (size_t)d;
  return true;
}

static void merkle_node(const uint8_t *left, const uint8_t *right, uint8_t *out) {
  static const uint8_t node_prefix = 1;
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  SHA256_Update(&ctx, &node_prefix, 1);
  SHA256_Update(&ctx, left, HASH);
  SHA256_Update(&ctx, right, HASH);
  SHA256_Final(out, &ctx);
}

static napi_value js_merkle_level(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  uint8_t *level, *next;
  size_t level_len, next_len, from, to;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 4 || !typed_bytes(env, argv[0], &level, &level_len) || !typed_bytes(env, argv[1], &next, &next_len) ||
      !index_arg(env, argv[2], &from) || !index_arg(env, argv[3], &to)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "merkleLevel(level, next, from, to): two Uint8Arrays and two node indexes");
    return NULL;
  }
  size_t n = level_len / HASH, m = (n + 1) / 2;
  if (level_len % HASH != 0 || next_len != m * HASH || from > to || to > m) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "merkleLevel: level must hold n 32-byte nodes, next ceil(n/2), and from <= to <= ceil(n/2)");
    return NULL;
  }
  for (size_t i = from; i < to; i++) {
    if (2 * i + 1 < n) merkle_node(level + 2 * i * HASH, level + (2 * i + 1) * HASH, next + i * HASH);
    else memmove(next + i * HASH, level + 2 * i * HASH, HASH);
  }
  return NULL;
}

void verity_register(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "digestFd", NAPI_AUTO_LENGTH, js_digest_fd, NULL, &fn) == napi_ok)
    napi_set_named_property(env, exports, "digestFd", fn);
  if (napi_create_function(env, "digestFdSync", NAPI_AUTO_LENGTH, js_digest_fd_sync, NULL, &fn) == napi_ok)
    napi_set_named_property(env, exports, "digestFdSync", fn);
  if (napi_create_function(env, "digestBuffer", NAPI_AUTO_LENGTH, js_digest_buffer, NULL, &fn) == napi_ok)
    napi_set_named_property(env, exports, "digestBuffer", fn);
  if (napi_create_function(env, "merkleLevel", NAPI_AUTO_LENGTH, js_merkle_level, NULL, &fn) == napi_ok)
    napi_set_named_property(env, exports, "merkleLevel", fn);
}
