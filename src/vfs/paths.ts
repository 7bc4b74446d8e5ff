import { InvalidPathError } from "../errors.ts";

export const MAX_NAME_BYTES = 255;
export const MAX_PATH_BYTES = 4096;

/**
 * Normalises a user-view path to `/a/b`. `..` never climbs above `/` (chroot semantics), so no path can leave
 * the user's home. NUL bytes, over-long names and over-long paths are refused.
 */
export function normalize(path: string): string {
  if (path.includes("\0")) throw new InvalidPathError("contains a NUL byte");
  // A lone surrogate has no UTF-8 form: stored, it would become U+FFFD and collide with other such names.
  if (!path.isWellFormed()) throw new InvalidPathError("not valid Unicode text");
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) throw new InvalidPathError(`longer than ${MAX_PATH_BYTES} bytes`);
  const parts: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      parts.pop();
      continue;
    }
    if (Buffer.byteLength(part) > MAX_NAME_BYTES)
      throw new InvalidPathError(`name longer than ${MAX_NAME_BYTES} bytes`);
    parts.push(part);
  }
  return `/${parts.join("/")}`;
}

export function split(path: string): string[] {
  const n = normalize(path);
  return n === "/" ? [] : n.slice(1).split("/");
}

export function parentAndName(path: string): { parent: string; name: string } {
  const parts = split(path);
  const name = parts.pop();
  if (name === undefined) throw new InvalidPathError("the root directory has no name");
  return { parent: `/${parts.join("/")}`, name };
}

/** True when `path` equals `prefix` or lies below it. */
export function isWithin(path: string, prefix: string): boolean {
  return prefix === "/" || path === prefix || path.startsWith(`${prefix}/`);
}
