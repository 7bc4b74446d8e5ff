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
  /** AEAD tag length; 0 for ciphers that need a MAC. */
  authLen: number;
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

export interface TransportCrypto {
  /** ssh2's OpenSSL binding is loaded (node_modules/ssh2/lib/protocol/crypto/build/Release/sshcrypto.node). */
  native: boolean;
  /** Ciphers the SSH server offers, in ssh2's order. */
  ciphers: string[];
  /** Ciphers whose binding gave other bytes than ssh2's JS implementation; left out of `ciphers`. */
  broken: string[];
  /** One line for the start log. */
  describe: string;
}

interface PacketCipher {
  allocPacket(payloadLen: number): Buffer;
  encrypt(packet: Buffer): void;
  free(): void;
}
interface PacketDecipher {
  decrypt(data: Buffer, p: number, dataLen: number): unknown;
  free(): void;
}

/**
 * Runs one packet through ssh2's binding and through its JS implementation (same keys, IV, sequence number) both
 * ways: the binding's ciphertext must equal the JS ciphertext, and the binding must decrypt that ciphertext to the
 * payload. A binding built with the wrong OpenSSL define computes other ChaCha20-Poly1305 tags than OpenSSH does
 * (clients drop the connection right after key exchange); a cipher that fails here is not offered.
 */
function bindingAgrees(c: SshCrypto, name: string): boolean {
  const info = c.CIPHER_INFO[name];
  const macInfo = info.authLen ? undefined : c.MAC_INFO["hmac-sha2-256-etm@openssh.com"];
  const key = Buffer.alloc(info.keyLen, 0x5a);
  const iv = () => (info.ivLen ? Buffer.alloc(info.ivLen, 0x3c) : undefined);
  const macKey = macInfo ? Buffer.alloc(macInfo.len, 0x77) : undefined;
  const cipher = (forceNative: boolean, out: Buffer[]) =>
    c.createCipher({
      outbound: {
        seqno: 7,
        forceNative,
        onWrite: (b: Uint8Array) => out.push(Buffer.from(b)),
        cipherInfo: info,
        cipherKey: key,
        cipherIV: iv(),
        macInfo,
        macKey,
      },
    }) as PacketCipher;
  const payload = Buffer.alloc(61, 0x11);
  const got: Buffer[] = [];
  const decipher = c.createDecipher({
    inbound: {
      seqno: 7,
      onPayload: (b: Uint8Array) => {
        got.push(Buffer.from(b));
      },
      decipherInfo: info,
      decipherKey: key,
      decipherIV: iv(),
      macInfo,
      macKey,
    },
  }) as PacketDecipher;
  const js: Buffer[] = [];
  const bin: Buffer[] = [];
  const a = cipher(true, js);
  const b = cipher(false, bin);
  try {
    // Several packets: a binding may get the first right and the next ones wrong (state kept across packets).
    for (let i = 0; i < 3; i++) {
      const pa = a.allocPacket(payload.length);
      const pb = b.allocPacket(payload.length);
      payload.copy(pa, 5);
      pa.copy(pb);
      a.encrypt(pa);
      b.encrypt(pb);
    }
    const wire = Buffer.concat(js);
    if (!wire.equals(Buffer.concat(bin))) return false;
    decipher.decrypt(wire, 0, wire.length);
    return got.length === 3 && got.every((g) => g.equals(payload));
  } finally {
    a.free();
    b.free();
    decipher.free();
  }
}

let transport: Promise<TransportCrypto> | undefined;

/** Which transport crypto ssh2 uses in this process, and the ciphers that are correct with it (checked once). */
export function transportCrypto(): Promise<TransportCrypto> {
  transport ??= checkTransport();
  return transport;
}

async function checkTransport(): Promise<TransportCrypto> {
  const req = createRequire(import.meta.url);
  const c = req("ssh2/lib/protocol/crypto.js") as SshCrypto & { bindingAvailable: boolean; init: Promise<void> };
  // The JS ChaCha20-Poly1305 needs ssh2's Poly1305 WebAssembly module, loaded asynchronously.
  await c.init;
  const defaults = (req("ssh2/lib/protocol/constants.js") as { DEFAULT_CIPHER: string[] }).DEFAULT_CIPHER;
  const native = c.bindingAvailable;
  const broken: string[] = [];
  if (native) {
    for (const name of defaults) {
      let ok = false;
      try {
        ok = bindingAgrees(c, name);
      } catch {
        ok = false;
      }
      if (!ok) broken.push(name);
    }
  }
  const ciphers = defaults.filter((n) => !broken.includes(n));
  const describe = native
    ? `native (ssh2's OpenSSL binding)${broken.length ? `; not offered, the binding disagrees with ssh2's JS ciphers: ${broken.join(", ")}` : ""}`
    : "pure-JS (ssh2's binding not loaded: see docs/operations.md, SFTP transport crypto)";
  return { native, ciphers, broken, describe };
}
