#pragma once
// Argument readers shared by the FUSE parts of the addon (fuse.c, fuse_backing.c).
#include <node_api.h>
#include <stddef.h>

// A JS number as a double (0 when it is not one).
static inline double num(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return d;
}

// The data of a Float64Array with at least min_len elements, else NULL.
static inline double *f64(napi_env env, napi_value v, size_t min_len) {
  napi_typedarray_type t;
  size_t len;
  void *data;
  if (napi_get_typedarray_info(env, v, &t, &len, &data, NULL, NULL) != napi_ok || t != napi_float64_array ||
      len < min_len)
    return NULL;
  return data;
}
