#pragma once
#include <node_api.h>
// fs-verity sha256 digests computed in C: digestFd(fd) -> Promise<hex> on the libuv pool,
// digestBuffer(bytes) -> hex synchronously.
void verity_register(napi_env env, napi_value exports);
