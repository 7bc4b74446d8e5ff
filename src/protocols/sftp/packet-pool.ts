// ssh2 allocates a fresh Buffer for every outbound SSH packet (allocPacket) and fills its padding with a
// randomFillSync call of its own (a native crypto job per packet). A download moves one 32 KiB packet per 32 KiB: a
// malloc, two JS objects and a crypto job each, garbage the collector frees later (the largest share of a download's
// ArrayBuffer churn after the SFTP layer's own). Here the native-binding cipher classes take packets of 16 KiB and
// more from a free list, which the connection's socket refills once it has written them (recyclePackets), and take
// padding from a CSPRNG buffer drawn 4 KiB at a time (each byte used once).
// ssh2's classes are not exported: their prototypes are reached through instances made by its exported factory, as
// fastcrypto.ts does. Each patched allocPacket is checked against the original (length, header, padding length) for
// many payload sizes first; a class that differs, or internals that moved, stay unpatched and ssh2 works as before.
import { randomFillSync } from "node:crypto";
import { createRequire } from "node:module";
import type { Socket } from "node:net";

/** Smaller packets come from Buffer's shared 8 KiB pool already. */
const POOLED_MIN = 16 * 1024;
/** Written packets kept for reuse, over all connections (about 64 of 32 KiB). */
const FREE_BYTES_MAX = 2 * 1024 * 1024;
const RANDOM_BYTES = 4096;

const free = new Map<number, Buffer[]>();
let freeBytes = 0;
/** Packets handed out by allocPacket and not yet given back. */
const lent = new WeakSet<Buffer>();
const random = Buffer.allocUnsafe(RANDOM_BYTES);
let randomAt = RANDOM_BYTES;
const stats = { allocated: 0, reused: 0 };
let patched: boolean | undefined;

function fillPadding(packet: Buffer, at: number, n: number): void {
  if (randomAt + n > RANDOM_BYTES) {
    randomFillSync(random);
    randomAt = 0;
  }
  random.copy(packet, at, randomAt, randomAt + n);
  randomAt += n;
}

function take(size: number): Buffer {
  if (size < POOLED_MIN) return Buffer.allocUnsafe(size);
  const packet = free.get(size)?.pop();
  if (packet !== undefined) {
    freeBytes -= size;
    stats.reused++;
  } else stats.allocated++;
  const out = packet ?? Buffer.allocUnsafe(size);
  lent.add(out);
  return out;
}

/** Gives a written packet back (nothing happens for a buffer allocPacket did not hand out, or one given back). */
function giveBack(packet: Buffer): void {
  if (!lent.delete(packet)) return;
  if (freeBytes + packet.length > FREE_BYTES_MAX) {
    // Full: packets of other sizes (another cipher's, an odd last packet) make room, so the pool follows what is sent.
    for (const [size, other] of free) {
      if (size === packet.length) continue;
      while (other.length > 0 && freeBytes + packet.length > FREE_BYTES_MAX) {
        other.pop();
        freeBytes -= size;
      }
      if (other.length === 0) free.delete(size);
      if (freeBytes + packet.length <= FREE_BYTES_MAX) break;
    }
    if (freeBytes + packet.length > FREE_BYTES_MAX) return;
  }
  let list = free.get(packet.length);
  if (list === undefined) {
    list = [];
    free.set(packet.length, list);
  }
  list.push(packet);
  freeBytes += packet.length;
}

type Alloc = (this: Record<string, unknown>, payloadLen: number) => Buffer;

/** ssh2's allocPacket: length, padding length, payload space, random padding to the block size, then the trailer. */
function allocPacketOf(block: (c: Record<string, unknown>) => number, aad: number | string, trailer: number | string) {
  return function allocPacket(this: Record<string, unknown>, payloadLen: number): Buffer {
    const blockLen = block(this);
    const aadLen = typeof aad === "number" ? aad : (this[aad] as number);
    let pktLen = 4 + 1 + payloadLen;
    let padLen = blockLen - ((pktLen - aadLen) & (blockLen - 1));
    if (padLen < 4) padLen += blockLen;
    pktLen += padLen;
    const packet = take(pktLen + (typeof trailer === "number" ? trailer : (this[trailer] as number)));
    packet.writeUInt32BE(pktLen - 4, 0);
    packet[4] = padLen;
    fillPadding(packet, 5 + payloadLen, padLen);
    return packet;
  } satisfies Alloc;
}

// The binding classes by name: AES-GCM pads to 16 with the length as AAD, ChaCha20-Poly1305 to 8, CTR/CBC with a MAC
// to the cipher's block (the length not counted with encrypt-then-MAC), each followed by its tag or MAC.
const ALLOCS: Record<string, Alloc> = {
  AESGCMCipherBinding: allocPacketOf(() => 16, 4, 16),
  ChaChaPolyCipherBinding: allocPacketOf(() => 8, 4, 16),
  GenericCipherBinding: allocPacketOf((c) => c._encBlockLen as number, "_aadLen", "_macLen"),
};

interface SshCrypto {
  bindingAvailable: boolean;
  CIPHER_INFO: Record<string, { keyLen: number; ivLen: number }>;
  MAC_INFO: Record<string, { len: number }>;
  createCipher(config: unknown): Record<string, unknown> & { free(): void };
}

/** The patched allocPacket lays out every size as the original does. */
function agrees(instance: Record<string, unknown>, original: Alloc, replacement: Alloc): boolean {
  for (const n of [0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 100, 255, 1000, 16_399, 16_400, 32_777, 32_768 + 500]) {
    const a = original.call(instance, n);
    const b = replacement.call(instance, n);
    if (a.length !== b.length || !a.subarray(0, 5).equals(b.subarray(0, 5))) return false;
  }
  return true;
}

/** Idempotent. Returns whether any binding cipher class now takes its packets from the free list. */
export function patchPacketAlloc(): boolean {
  if (patched !== undefined) return patched;
  patched = false;
  try {
    const c = createRequire(import.meta.url)("ssh2/lib/protocol/crypto.js") as SshCrypto;
    if (!c.bindingAvailable) return false;
    const samples: [string, string | undefined][] = [
      ["aes128-gcm@openssh.com", undefined],
      ["chacha20-poly1305@openssh.com", undefined],
      ["aes128-ctr", "hmac-sha2-256"],
      ["aes128-ctr", "hmac-sha2-256-etm@openssh.com"],
    ];
    const checked = new Map<object, boolean>();
    for (const [name, macName] of samples) {
      const info = c.CIPHER_INFO[name];
      const macInfo = macName ? c.MAC_INFO[macName] : undefined;
      if (!info || (macName && !macInfo)) continue;
      const cipher = c.createCipher({
        outbound: {
          seqno: 0,
          onWrite() {},
          cipherInfo: info,
          cipherKey: Buffer.alloc(info.keyLen, 1),
          cipherIV: info.ivLen ? Buffer.alloc(info.ivLen) : undefined,
          macInfo,
          macKey: macInfo ? Buffer.alloc(macInfo.len, 1) : undefined,
        },
      });
      try {
        const proto = Object.getPrototypeOf(cipher) as Record<string, unknown>;
        const replacement = ALLOCS[(proto.constructor as { name?: string }).name ?? ""];
        const original = proto.allocPacket as Alloc | undefined;
        if (!replacement || typeof original !== "function" || checked.get(proto) === false) continue;
        checked.set(proto, agrees(cipher, original, replacement));
      } finally {
        cipher.free();
      }
    }
    for (const [proto, ok] of checked) {
      if (!ok) continue;
      (proto as Record<string, unknown>).allocPacket = ALLOCS[(proto.constructor as { name: string }).name];
      patched = true;
    }
    stats.allocated = 0;
  } catch {
    // Internals moved: ssh2 keeps its own allocPacket.
  }
  return patched;
}

/**
 * Lets `socket` give the packets it has written back for reuse. ssh2 writes each packet with socket.write(packet);
 * the write's callback runs once the kernel has taken the bytes (or the write failed), and only then may the buffer
 * be filled again. Packets written any other way are simply left to the garbage collector.
 */
export function recyclePackets(socket: Socket): void {
  if (!patched) return;
  const write = socket.write as (this: Socket, ...args: unknown[]) => boolean;
  socket.write = function (this: Socket, chunk: unknown, ...rest: unknown[]): boolean {
    if (rest.length === 0 && Buffer.isBuffer(chunk) && lent.has(chunk)) {
      return write.call(this, chunk, (err?: Error | null) => {
        if (!err) giveBack(chunk);
      });
    }
    return write.call(this, chunk, ...rest);
  } as Socket["write"];
}

/** Packets allocated and reused so far (tests, diagnostics). */
export function packetPoolStats(): { allocated: number; reused: number } {
  return { ...stats };
}
