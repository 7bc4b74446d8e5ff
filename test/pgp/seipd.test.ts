// The direct SEIPD v1 writer against GnuPG 2.2 and openpgp.js: both decrypt it, at the partial-length boundaries.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as openpgp from "openpgp";
import { readPublicKey } from "../../src/pgp/keys.ts";
import { COMPRESSION_UNCOMPRESSED, SYMMETRIC_AES256 } from "../../src/pgp/lib.ts";
import { EncryptedMessageCheck } from "../../src/pgp/packets.ts";
import { seipdV1Applies, seipdV1Stream } from "../../src/pgp/seipd.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";
import { GPG_PASSPHRASE, Gpg } from "../helpers/gpg.ts";

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

function chunked(data: Buffer, size: number): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(c) {
      if (at >= data.length) return c.close();
      c.enqueue(data.subarray(at, at + size));
      at += size;
    },
  });
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

describe("direct SEIPD v1 writer (GnuPG 2.2 and openpgp.js decrypt it)", () => {
  it("the algorithm ids kept as numbers (so that constants do not load openpgp) are openpgp's", () => {
    assert.equal(COMPRESSION_UNCOMPRESSED, openpgp.enums.compression.uncompressed);
    assert.equal(SYMMETRIC_AES256, openpgp.enums.symmetric.aes256);
  });

  let dir: string;
  let gpg: Gpg;
  let rsa: string;
  let ecc: string;
  let keys: openpgp.PublicKey[];
  let secret: openpgp.PrivateKey;

  before(async () => {
    dir = await tempDir();
    gpg = await Gpg.create();
    rsa = await gpg.generate("R <r@example.com>", "rsa3072");
    ecc = await gpg.generate("E <e@example.com>", "ed25519");
    keys = [await readPublicKey(await gpg.exportPublic(rsa)), await readPublicKey(await gpg.exportPublic(ecc))];
    secret = await openpgp.decryptKey({
      privateKey: await openpgp.readPrivateKey({
        armoredKey: (await gpg.ok(["--armor", "--export-secret-keys", ecc])).stdout,
      }),
      passphrase: GPG_PASSPHRASE,
    });
  });
  after(async () => {
    await gpg.stop();
    await removeDir(dir);
  });

  it("applies to gpg 2.2 keys (AES-256 preferred, no SEIPD v2 feature)", async () => {
    assert.equal(await seipdV1Applies(keys), true);
    const { publicKey } = await openpgp.generateKey({
      userIDs: [{ name: "v2" }],
      format: "object",
      config: { aeadProtect: true },
    });
    assert.equal(await seipdV1Applies([publicKey]), false, "a key advertising SEIPD v2 only: openpgp's path");
  });

  for (const [size, chunk] of [
    [0, 1000],
    [1, 1000],
    [(1 << 20) - 6, 65_536],
    [(1 << 20) - 5, 65_536],
    [1 << 20, 1 << 20],
    [(1 << 20) + 1, 333_333],
    [3 * (1 << 20) + 7, 1 << 20],
  ]) {
    it(`${size} bytes in ${chunk}-byte writes: gpg and openpgp.js decrypt to the same sha256`, async () => {
      const data = randomBytes(size);
      const message = await collect(await seipdV1Stream(chunked(data, chunk), keys, { filename: "f.bin" }));
      const check = new EncryptedMessageCheck();
      check.push(message);
      assert.equal(check.end().recipientKeyIds.length, 2);
      const file = join(dir, `m${size}.pgp`);
      await writeFile(file, message);
      const r = await gpg.decrypt(file, `${file}.out`);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /DECRYPTION_OKAY/);
      assert.match(r.stderr, /GOODMDC/);
      assert.equal(sha(await readFile(`${file}.out`)), sha(data));
      const decrypted = await openpgp.decrypt({
        message: await openpgp.readMessage({ binaryMessage: message }),
        decryptionKeys: secret,
        format: "binary",
        config: { allowUnauthenticatedStream: false },
      });
      assert.equal(sha(decrypted.data as Uint8Array), sha(data));
      assert.equal((decrypted as unknown as { filename?: string }).filename ?? "f.bin", "f.bin");
    });
  }

  it("a flipped ciphertext bit fails gpg's MDC check", async () => {
    const data = randomBytes(100_000);
    const message = await collect(await seipdV1Stream(chunked(data, 4096), keys));
    message[message.length - 5000] ^= 1;
    const file = join(dir, "tampered.pgp");
    await writeFile(file, message);
    const r = await gpg.decrypt(file, `${file}.out`);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /BADMDC|DECRYPTION_FAILED/);
  });
});
