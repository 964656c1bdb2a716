// Entry point of the native addon: each part registers its functions on the exports object.
#include <node_api.h>
#include "sys.h"
#include "verity.h"
#include "fuse.h"

NAPI_MODULE_INIT() {
  sys_register(env, exports);
  verity_register(env, exports);
  fuse_register(env, exports);
  return exports;
}
