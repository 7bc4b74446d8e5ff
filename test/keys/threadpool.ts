// Imported first by tests that create thousands of files: each upload fsyncs its blob and shard directory on libuv's
// thread pool, and the default 4 threads serialise them. Must run before anything touches the pool.
process.env.UV_THREADPOOL_SIZE ??= "16";
