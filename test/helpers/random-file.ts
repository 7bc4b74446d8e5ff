import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";

/** `size` random bytes as a stream of 1 MiB chunks (incompressible, generated as fast as the disk takes them). */
export function randomStream(size: number): Readable {
  let left = size;
  return new Readable({
    read() {
      if (left === 0) {
        this.push(null);
        return;
      }
      const n = Math.min(left, 1 << 20);
      left -= n;
      this.push(randomBytes(n));
    },
  });
}
