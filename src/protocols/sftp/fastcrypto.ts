// Node 24 spends ~40 µs per createCipheriv/createHmac call when the key is a Buffer (it builds a key object each
// time) and ~7 µs with a KeyObject; Node 20 did not. ssh2 without its native binding creates one cipher per SSH
// packet, so this halved the server's CPU per transferred byte (measurements in the SFTP adapter report).
// We turn ssh2's per-connection key fields into KeyObjects once, at assignment. ssh2's classes are not exported, so
// we reach their prototypes through instances made by its exported factories; if its internals change, nothing is
// patched and ssh2 still works, only slower.
import { createSecretKey, type KeyObject } from "node:crypto";
import { createRequire } from "node:module";

const KEY_FIELD = /^_(enc|dec|decipher|mac)Key(Main|PktLen)?$/;
let applied: boolean | undefined;

interface CipherInfo {
  keyLen: number;
  ivLen: number;
}
interface SshCrypto {
  CIPHER_INFO: Record<string, CipherInfo>;
  MAC_INFO: Record<string, { len: number }>;
  createCipher(config: unknown): object;
  createDecipher(config: unknown): object;
}

function patchPrototypeOf(instance: object): number {
  const proto = Object.getPrototypeOf(instance) as Record<string | symbol, unknown>;
  let n = 0;
  for (const field of Object.keys(instance)) {
    if (!KEY_FIELD.test(field) || !Buffer.isBuffer((instance as Record<string, unknown>)[field])) continue;
    if (Object.getOwnPropertyDescriptor(proto, field)) continue;
    const slot = Symbol(field);
    Object.defineProperty(proto, field, {
      configurable: true,
      get(this: Record<symbol, unknown>) {
        return this[slot];
      },
      set(this: Record<symbol, unknown>, v: Buffer | KeyObject) {
        this[slot] = Buffer.isBuffer(v) && v.length > 0 ? createSecretKey(v) : v;
      },
    });
    n++;
  }
  return n;
}

/** Idempotent. Returns whether any ssh2 cipher class was patched. */
export function speedUpSsh2Crypto(): boolean {
  if (applied !== undefined) return applied;
  applied = false;
  try {
    const c = createRequire(import.meta.url)("ssh2/lib/protocol/crypto.js") as SshCrypto;
    const mac = c.MAC_INFO["hmac-sha2-256"];
    for (const name of ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr"]) {
      const info = c.CIPHER_INFO[name];
      if (!info) continue;
      const key = Buffer.alloc(info.keyLen, 1);
      const iv = info.ivLen ? Buffer.alloc(info.ivLen) : undefined;
      const macInfo = name === "aes128-ctr" ? mac : undefined;
      const macKey = macInfo ? Buffer.alloc(macInfo.len, 1) : undefined;
      const common = { seqno: 0, forceNative: true, macInfo, macKey };
      const enc = c.createCipher({
        outbound: { ...common, onWrite() {}, cipherInfo: info, cipherKey: key, cipherIV: iv },
      });
      const dec = c.createDecipher({
        inbound: { ...common, onPayload() {}, decipherInfo: info, decipherKey: key, decipherIV: iv },
      });
      if (patchPrototypeOf(enc) + patchPrototypeOf(dec) > 0) applied = true;
    }
  } catch {
    // Internals moved: run unpatched.
  }
  return applied;
}
