{
  "targets": [
    {
      "target_name": "atrest_gcm",
      "sources": ["gcm.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
