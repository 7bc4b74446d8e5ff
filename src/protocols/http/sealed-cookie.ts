// Self-contained cookies for state a browser carries between requests that any node of a cluster must accept (issue
// 15): a share link unlocked on one node works on the others; an OIDC login started on one finishes on another. The
// value is AES-256-GCM under a key derived per purpose (HKDF-SHA256) from the server's cookie key, a data key the key
// manager wraps in the settings table (every node on the store unwraps the same one). A random 96-bit nonce per
// cookie; the purpose is the AAD, so a cookie of one kind is never accepted as another; the expiry is inside.
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from "node:crypto";

export const COOKIE_KEY_SETTING = "http.cookie.key";
export const COOKIE_KEY_CONTEXT = { purpose: "http-cookies" };

const NONCE = 12;
const TAG = 16;

export class SealedCookies {
  readonly #keys = new Map<string, Buffer>();
  readonly #root: Buffer;

  /** `root`: 32 bytes, owned from now on (`close` zeroes it and the keys derived from it). */
  constructor(root: Buffer) {
    if (root.length !== 32) throw new Error("cookie key must be 32 bytes");
    this.#root = root;
  }

  #key(purpose: string): Buffer {
    let k = this.#keys.get(purpose);
    if (!k) {
      k = Buffer.from(hkdfSync("sha256", this.#root, Buffer.alloc(0), `atrest http cookie ${purpose}`, 32));
      this.#keys.set(purpose, k);
    }
    return k;
  }

  /** A keyed tag of `value` (HMAC-SHA256 under the purpose's key): the same on every node, opaque without the key. */
  tag(purpose: string, value: string): string {
    return createHmac("sha256", this.#key(purpose)).update(value).digest("base64url");
  }

  /** `payload` sealed with its expiry, as a cookie-safe string. */
  seal(purpose: string, payload: Record<string, unknown>, ttlMs: number, now = Date.now()): string {
    const nonce = randomBytes(NONCE);
    const c = createCipheriv("aes-256-gcm", this.#key(purpose), nonce);
    c.setAAD(Buffer.from(purpose));
    const body = Buffer.from(JSON.stringify({ ...payload, exp: now + ttlMs }));
    const ct = Buffer.concat([c.update(body), c.final()]);
    return Buffer.concat([nonce, ct, c.getAuthTag()]).toString("base64url");
  }

  /** The payload, or undefined for a value that is not ours, of another purpose, tampered with or expired. */
  open(purpose: string, value: string | undefined, now = Date.now()): Record<string, unknown> | undefined {
    if (!value || value.length > 4096) return undefined;
    const raw = Buffer.from(value, "base64url");
    if (raw.length < NONCE + TAG + 2) return undefined;
    try {
      const d = createDecipheriv("aes-256-gcm", this.#key(purpose), raw.subarray(0, NONCE));
      d.setAAD(Buffer.from(purpose));
      d.setAuthTag(raw.subarray(raw.length - TAG));
      const body = Buffer.concat([d.update(raw.subarray(NONCE, raw.length - TAG)), d.final()]);
      const v = JSON.parse(body.toString("utf8")) as Record<string, unknown>;
      return typeof v.exp === "number" && v.exp > now ? v : undefined;
    } catch {
      return undefined;
    }
  }

  close(): void {
    for (const k of this.#keys.values()) k.fill(0);
    this.#keys.clear();
    this.#root.fill(0);
  }
}
