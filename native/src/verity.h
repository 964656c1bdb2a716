#pragma once
#include <node_api.h>
// fs-verity sha256 digests computed in C: digestFd(fd) -> Promise<hex> on the libuv pool,
// digestBuffer(bytes) -> hex synchronously; merkleLevel(level, next, from, to) hashes one level of
// a commit's Merkle tree (RFC 6962 nodes) from the level below, synchronously.
void verity_register(napi_env env, napi_value exports);
