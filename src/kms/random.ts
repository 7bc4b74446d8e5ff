// Small random draws (12-byte nonces, 32-byte DEKs) from a pooled buffer: one randomFillSync per ~90 wraps instead of
// two per wrap, which was ~13% of generateDataKey's time. Every byte is handed out once and zeroed as it is taken.

import { randomFillSync } from "node:crypto";

const POOL_BYTES = 4096;
const pool = Buffer.alloc(POOL_BYTES);
let offset = POOL_BYTES;

export function fillRandom(out: Buffer): Buffer {
  const n = out.length;
  if (n > 256) return randomFillSync(out);
  if (offset + n > POOL_BYTES) {
    randomFillSync(pool);
    offset = 0;
  }
  pool.copy(out, 0, offset, offset + n);
  pool.fill(0, offset, offset + n);
  offset += n;
  return out;
}
