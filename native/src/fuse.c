// Placeholder until the libfuse3 binding lands: registers nothing.
#include "fuse.h"
void fuse_register(napi_env env, napi_value exports) { (void)env; (void)exports; }
