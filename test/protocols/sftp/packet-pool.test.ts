// ssh2's outbound packets from packet-pool.ts: reused only after the socket has written them. Packets are encrypted by
// ssh2's native binding into recycled buffers, written to a real loopback socket in corked bursts (so some are still
// queued while later ones are built), and decrypted on the other end by ssh2's independent JS implementation: every
// payload must arrive intact, in order, for each kind of binding cipher. (The end-to-end check with OpenSSH's sftp and
// paramiko for every cipher and MAC is transport-crypto.test.ts.)
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { connect, createServer, type Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import { packetPoolStats, patchPacketAlloc, recyclePackets } from "../../../src/protocols/sftp/packet-pool.ts";

interface Cipher {
  allocPacket(n: number): Buffer;
  encrypt(packet: Buffer): void;
  free(): void;
}
interface Decipher {
  decrypt(data: Buffer, p: number, len: number): unknown;
  free(): void;
}
interface SshCrypto {
  bindingAvailable: boolean;
  init: Promise<void>;
  CIPHER_INFO: Record<string, { keyLen: number; ivLen: number }>;
  MAC_INFO: Record<string, { len: number }>;
  createCipher(config: unknown): Cipher;
  createDecipher(config: unknown): Decipher;
}
const c = createRequire(import.meta.url)("ssh2/lib/protocol/crypto.js") as SshCrypto;

describe("recycled SSH packet buffers", {
  skip: !c.bindingAvailable && "ssh2's native binding is not built here",
}, () => {
  let a: Socket;
  let b: Socket;
  const server = createServer();
  before(async () => {
    await c.init;
    assert.equal(patchPacketAlloc(), true, "the binding ciphers' allocPacket is patched");
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const accepted = new Promise<Socket>((r) => server.once("connection", r));
    const port = (server.address() as { port: number }).port;
    b = connect(port, "127.0.0.1");
    a = await accepted;
    recyclePackets(a);
  });
  after(() => {
    a?.destroy();
    b?.destroy();
    server.close();
  });

  for (const [name, macName] of [
    ["aes128-gcm@openssh.com", undefined],
    ["chacha20-poly1305@openssh.com", undefined],
    ["aes256-ctr", "hmac-sha2-256"],
    ["aes128-ctr", "hmac-sha2-512-etm@openssh.com"],
  ] as const) {
    test(`${name}${macName ? ` + ${macName}` : ""}: 300 packets of 32 KiB arrive intact`, async () => {
      const info = c.CIPHER_INFO[name];
      const macInfo = macName ? c.MAC_INFO[macName] : undefined;
      const key = randomBytes(info.keyLen);
      const iv = info.ivLen ? randomBytes(info.ivLen) : undefined;
      const macKey = macInfo ? randomBytes(macInfo.len) : undefined;
      const before = packetPoolStats();
      const cipher = c.createCipher({
        outbound: {
          seqno: 3,
          onWrite: (p: Buffer) => a.write(p),
          cipherInfo: info,
          cipherKey: key,
          cipherIV: iv,
          macInfo,
          macKey,
        },
      });
      const got: Buffer[] = [];
      const decipher = c.createDecipher({
        inbound: {
          seqno: 3,
          forceNative: true,
          onPayload: (p: Buffer) => {
            got.push(Buffer.from(p));
          },
          decipherInfo: info,
          decipherKey: key,
          decipherIV: iv,
          macInfo,
          macKey,
        },
      });
      const onData = (d: Buffer) => decipher.decrypt(d, 0, d.length);
      b.on("data", onData);
      const sent: Buffer[] = [];
      try {
        for (let burst = 0; burst < 30; burst++) {
          a.cork();
          for (let i = 0; i < 10; i++) {
            const payload = randomBytes(32 * 1024 + 9 + ((burst * 10 + i) % 3));
            const packet = cipher.allocPacket(payload.length);
            payload.copy(packet, 5);
            cipher.encrypt(packet);
            sent.push(payload);
          }
          a.uncork();
          await new Promise((r) => setImmediate(r));
        }
        // up to 30 s: at load 40 the loopback delivery of 300 x 32 KiB can take seconds
        for (let i = 0; i < 1200 && got.length < sent.length; i++) await new Promise((r) => setTimeout(r, 25));
      } finally {
        b.off("data", onData);
        cipher.free();
        decipher.free();
      }
      assert.equal(got.length, sent.length);
      for (const [i, p] of sent.entries()) assert.ok(got[i]?.equals(p), `payload ${i} differs`);
      const stats = packetPoolStats();
      assert.ok(stats.reused - before.reused > 100, `buffers reused: ${stats.reused - before.reused} of 300`);
    });
  }
});
