{
  "targets": [
    {
      "target_name": "stratum_native",
      "sources": ["src/addon.c", "src/sys.c", "src/verity.c", "src/fuse.c", "src/fuse_backing.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2", "<!@(pkg-config --cflags fuse3)"],
      "libraries": ["<!@(pkg-config --libs fuse3)", "-lpthread"],
      "defines": ["_GNU_SOURCE", "NAPI_VERSION=8", "FUSE_USE_VERSION=312"]
    }
  ]
}
