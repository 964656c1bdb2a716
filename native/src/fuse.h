#pragma once
#include <node_api.h>

// FUSE binding (libfuse3 low-level API). fuse.c: sessions, request dispatch to JS, replies, data plane.
// fuse_backing.c: the few syscalls a passthrough needs that node:fs lacks (ns times, renameat2, xattrs...).
void fuse_register(napi_env env, napi_value exports);
void fuse_backing_register(napi_env env, napi_value exports);

// Layouts of the Float64Arrays exchanged with TS (src/native/fuse.ts mirrors them).
// attr:  ino mode nlink uid gid rdev size blocks blksize atime atimeNsec mtime mtimeNsec ctime ctimeNsec
#define ATTR_LEN 15
// entry: nodeid generation entryTimeout attrTimeout attr...
#define ENTRY_LEN (4 + ATTR_LEN)
// dirent (readdir reply): nameLen nextOffset entry...
#define DIRENT_LEN (2 + ENTRY_LEN)
