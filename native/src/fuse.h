#pragma once
#include <node_api.h>
void fuse_register(napi_env env, napi_value exports);
