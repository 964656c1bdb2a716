#pragma once
#include <node_api.h>
// Registers the syscall bindings (xattrs, mknod, renameat2, syncfs, flock, lease probe, mount and
// the new mount API) on exports.
void sys_register(napi_env env, napi_value exports);

// Builds (does not throw) a Node-style system error: code, errno, syscall, and path/dest when the
// caller gives the JS values. Shared by every part of the addon that reports errno.
napi_value sys_error(napi_env env, int err, const char *syscall, const char *path, napi_value path_v,
                     const char *dest, napi_value dest_v);
