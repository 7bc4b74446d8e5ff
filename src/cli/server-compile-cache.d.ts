// Types of the plain JavaScript ./server-compile-cache.js (bin/atrest.js loads it without type stripping).
export function serverCompileCache(root: string): { NODE_COMPILE_CACHE?: string };
