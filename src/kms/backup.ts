// `kms backup` / `kms restore`: one encrypted, integrity-protected bundle of a Shamir-sealed KMS directory (a
// consistent kms.db snapshot, the CA and TLS files, the KMS audit log).
//
// Who can read a bundle: only whoever holds a quorum of the unseal shares — the same people who can unseal the KMS.
// Taking one needs no secret, so a cron job on the KMS host can do it while the KMS runs:
//   - at `kms init`, an X25519 "backup key pair" is made; its public half is stored in kms.db, its private half
//     sealed under a key derived from the unseal key (HKDF, bound to the sealId);
//   - a backup draws a random bundle key K, wraps it to the backup public key (ephemeral X25519 + HKDF + AES-GCM) and
//     encrypts the archive under K in the container format (docs/format.md: segmented AES-256-GCM, key-committing,
//     truncation/reorder detected), with the file id bound to a hash of the cleartext manifest;
//   - restore combines the shares, opens the backup private key, unwraps K, decrypts and verifies everything into a
//     temporary directory, checks that the restored database unseals with those shares, and only then moves it into
//     place. KEKs inside kms.db stay sealed under the master key throughout.
//
// Bundle: "ATRKB1\n" ‖ u32 BE manifest length ‖ manifest JSON ‖ container. Archive inside the container: entries of
// u16 name length ‖ name ‖ u64 size ‖ bytes, ended by a zero name length. Names come from a fixed list.

import { createHash, createPublicKey, diffieHellman, generateKeyPairSync, randomUUID } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { mkdir, open, readdir, rename, rm, stat, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { decryptStream, encryptStream } from "../container-io/streams.ts";
import { open as aeadOpen, seal as aeadSeal } from "../crypto/aead.ts";
import { hkdfSha256 } from "../crypto/hkdf.ts";
import { randomBytes } from "../crypto/random.ts";
import { AtrestError, IntegrityError, KeyUnavailableError } from "../errors.ts";
import { createHeader, openContainer } from "../format/container.ts";
import { syncDir, writeDurable } from "../fsutil/durable.ts";
import { BACKUP_PRIVATE_SEALED, BACKUP_PUBLIC, openBackupPrivateKey } from "./backup-key.ts";
import { CA_CERT_FILE, CA_KEY_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE } from "./cert-files.ts";
import { KMS_STORE_FILE, KmsDb } from "./db.ts";
import { KMS_AUDIT_FILE, KMS_AUDIT_PUBLIC_KEY_FILE } from "./kms-audit.ts";
import { combineShares, parseShare } from "./shares.ts";
import { readSealConfig, type ShamirConfig, verifyUnsealKey } from "./unseal.ts";

const MAGIC = Buffer.from("ATRKB1\n", "latin1");
const FORMAT = "atrest-kms-backup";
const VERSION = 1;
const KMS_DB = "kms.db";
const WRAP_INFO = Buffer.from("atrest-kms-backup-wrap-v1");
const WRAP_AAD = Buffer.from("atrest-kms-backup-v1\0", "latin1");
/** What a bundle may hold, in this order; anything else in an archive is refused. */
const ENTRIES = [
  KMS_DB,
  CA_KEY_FILE,
  CA_CERT_FILE,
  SERVER_KEY_FILE,
  SERVER_CERT_FILE,
  KMS_AUDIT_FILE,
  KMS_AUDIT_PUBLIC_KEY_FILE,
] as const;
const REQUIRED = new Set<string>([KMS_DB, CA_KEY_FILE, CA_CERT_FILE, SERVER_KEY_FILE, SERVER_CERT_FILE]);
const MAX_MANIFEST = 64 * 1024;

interface Manifest {
  format: typeof FORMAT;
  version: number;
  createdAt: string;
  sealId: string;
  threshold: number;
  shares: number;
  /** SPKI DER, base64: the bundle key was wrapped to this public key. */
  backupPublic: string;
  /** The matching private key, sealed under the unseal key (opens only with a quorum of shares). */
  backupPrivateSealed: string;
  ephemeralPublic: string;
  wrappedKey: string;
}

function bundleKeyWrap(shared: Buffer, ephemeralPublic: Buffer, backupPublic: Buffer): Buffer {
  return hkdfSha256(shared, Buffer.concat([ephemeralPublic, backupPublic]), WRAP_INFO);
}

function fileIdOf(manifestJson: Buffer): string {
  return `${FORMAT}:${createHash("sha256").update(manifestJson).digest("hex")}`;
}

/** The archive as a stream of chunks, reading each file as it goes (constant memory). */
async function* archive(files: readonly { name: string; path: string; size: number }[]): AsyncGenerator<Buffer> {
  for (const f of files) {
    const name = Buffer.from(f.name, "utf8");
    const head = Buffer.alloc(2 + name.length + 8);
    head.writeUInt16BE(name.length, 0);
    name.copy(head, 2);
    head.writeBigUInt64BE(BigInt(f.size), 2 + name.length);
    yield head;
    let left = f.size;
    // Read exactly the size recorded (an audit log may grow meanwhile; the rest belongs to the next backup).
    if (left > 0) {
      for await (const chunk of createReadStream(f.path, { start: 0, end: f.size - 1 })) {
        const c = chunk as Buffer;
        left -= c.length;
        yield c;
      }
    }
    if (left !== 0) throw new AtrestError("INTEGRITY", `${f.name} shrank while it was being backed up`);
  }
  yield Buffer.alloc(2);
}

export interface BackupResult {
  path: string;
  bytes: number;
  files: string[];
}

/** Writes an encrypted bundle of the KMS in `dir` to `out` (0600; temp → fsync → rename). Needs no secret. */
export async function backupKms(dir: string, out: string, now: () => Date = () => new Date()): Promise<BackupResult> {
  if (existsSync(join(dir, KMS_STORE_FILE))) {
    throw new AtrestError(
      "UNSUPPORTED",
      "kms backup copies kms.db: a KMS on a PostgreSQL store is backed up with pg_dump of its schema (sealed " +
        "material only) and a copy of each node's directory (docs/kms.md, High availability)",
    );
  }
  const dbPath = join(dir, KMS_DB);
  if (!existsSync(dbPath)) throw new KeyUnavailableError(`KMS not initialised: ${dbPath} not found`);
  const db = new KmsDb(dbPath);
  let config: ShamirConfig;
  let backupPublic: Buffer;
  let backupPrivateSealed: Buffer;
  try {
    const c = readSealConfig(db, dir);
    if (!c) throw new KeyUnavailableError(`KMS not initialised in ${dir}`);
    if (c.kind !== "shamir") {
      throw new AtrestError(
        "UNSUPPORTED",
        "a dev-mode KMS keeps its master key in the clear in master.key, so there is nothing to seal a backup " +
          "under: copy the directory (it is only as safe as that copy), or initialise a KMS with --shares/--threshold",
      );
    }
    config = c;
    const pub = db.getMeta(BACKUP_PUBLIC);
    const priv = db.getMeta(BACKUP_PRIVATE_SEALED);
    if (!pub || !priv)
      throw new KeyUnavailableError(`the KMS in ${dir} has no backup key (initialised by an older atrest)`);
    backupPublic = Buffer.from(pub);
    backupPrivateSealed = Buffer.from(priv);
  } finally {
    db.close();
  }

  await mkdir(dirname(out), { recursive: true, mode: 0o700 });
  const tag = randomUUID();
  const snapshot = join(dirname(out), `.kms-snapshot.${tag}.db`);
  const bundleKey = randomBytes(32);
  try {
    // A consistent copy even while `kms serve` writes: SQLite builds it inside one read transaction.
    const src = new DatabaseSync(dbPath, { readOnly: true });
    try {
      src.exec(`VACUUM INTO '${snapshot.replace(/'/g, "''")}'`);
    } finally {
      src.close();
    }
    const files: { name: string; path: string; size: number }[] = [];
    for (const name of ENTRIES) {
      const path = name === KMS_DB ? snapshot : join(dir, name);
      if (!existsSync(path)) {
        if (REQUIRED.has(name)) throw new AtrestError("NOT_FOUND", `${join(dir, name)} is missing; nothing backed up`);
        continue;
      }
      files.push({ name, path, size: (await stat(path)).size });
    }

    const ephemeral = generateKeyPairSync("x25519");
    const ephemeralPublic = ephemeral.publicKey.export({ format: "der", type: "spki" });
    const shared = diffieHellman({
      privateKey: ephemeral.privateKey,
      publicKey: createPublicKey({ key: backupPublic, format: "der", type: "spki" }),
    });
    const sealId = Buffer.from(config.sealId, "hex");
    const wrapKey = bundleKeyWrap(shared, ephemeralPublic, backupPublic);
    shared.fill(0);
    const wrappedKey = aeadSeal(wrapKey, randomBytes(12), bundleKey, Buffer.concat([WRAP_AAD, sealId]));
    wrapKey.fill(0);
    const manifest: Manifest = {
      format: FORMAT,
      version: VERSION,
      createdAt: now().toISOString(),
      sealId: config.sealId,
      threshold: config.threshold,
      shares: config.shares,
      backupPublic: backupPublic.toString("base64"),
      backupPrivateSealed: backupPrivateSealed.toString("base64"),
      ephemeralPublic: ephemeralPublic.toString("base64"),
      wrappedKey: wrappedKey.toString("base64"),
    };
    const manifestJson = Buffer.from(JSON.stringify(manifest));
    const prefix = Buffer.alloc(MAGIC.length + 4);
    MAGIC.copy(prefix, 0);
    prefix.writeUInt32BE(manifestJson.length, MAGIC.length);
    const { header, keys } = createHeader({ dek: bundleKey, fileId: fileIdOf(manifestJson), wrappedDek: wrappedKey });
    let bytes = 0;
    try {
      await writeDurable(out, async (fh) => {
        await fh.write(Buffer.concat([prefix, manifestJson]));
        await pipeline(
          Readable.from(archive(files)),
          encryptStream(header, keys),
          async (sealed: AsyncIterable<Buffer>) => {
            for await (const chunk of sealed) await fh.write(chunk);
          },
        );
        bytes = (await fh.stat()).size;
      });
    } finally {
      keys.destroy();
    }
    return { path: out, bytes, files: files.map((f) => f.name) };
  } finally {
    bundleKey.fill(0);
    await unlink(snapshot).catch(() => {});
  }
}

/** Byte reader over an async iterable of chunks. */
class Reader {
  readonly #it: AsyncIterator<Buffer>;
  #buf: Buffer = Buffer.alloc(0);
  constructor(source: AsyncIterable<Buffer>) {
    this.#it = source[Symbol.asyncIterator]();
  }
  async #fill(n: number): Promise<boolean> {
    while (this.#buf.length < n) {
      const next = await this.#it.next();
      if (next.done) return false;
      this.#buf = this.#buf.length === 0 ? next.value : Buffer.concat([this.#buf, next.value]);
    }
    return true;
  }
  async exact(n: number, what: string): Promise<Buffer> {
    if (!(await this.#fill(n))) throw new IntegrityError(`backup bundle truncated (${what})`);
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }
  /** Up to `max` bytes (at least 1), for streaming a file body. */
  async some(max: number, what: string): Promise<Buffer> {
    if (this.#buf.length === 0 && !(await this.#fill(1))) throw new IntegrityError(`backup bundle truncated (${what})`);
    const n = Math.min(max, this.#buf.length);
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }
  async end(): Promise<boolean> {
    return !(await this.#fill(1));
  }
  async return(): Promise<void> {
    await this.#it.return?.();
  }
}

async function isEmptyOrMissing(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length === 0;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return true;
    throw e;
  }
}

export interface RestoreResult {
  dir: string;
  files: string[];
  createdAt: string;
}

/**
 * Restores a bundle into `dir` (must be missing or empty) with at least `threshold` of the KMS's unseal shares.
 * Everything is decrypted and verified in a temporary sibling directory first; a bad share, a tampered or truncated
 * bundle leaves `dir` untouched.
 */
export async function restoreKms(
  bundle: string,
  dir: string,
  shares: readonly string[] | ((threshold: number, total: number) => Promise<string[]>),
): Promise<RestoreResult> {
  if (!(await isEmptyOrMissing(dir))) {
    throw new AtrestError("EXISTS", `${dir} is not empty: restore into a new or empty directory`);
  }
  const fh = await open(bundle, "r");
  let manifest: Manifest;
  let manifestJson: Buffer;
  let bodyOffset: number;
  try {
    const prefix = Buffer.alloc(MAGIC.length + 4);
    const { bytesRead } = await fh.read(prefix, 0, prefix.length, 0);
    if (bytesRead !== prefix.length || !prefix.subarray(0, MAGIC.length).equals(MAGIC)) {
      throw new AtrestError("INVALID_INPUT", `${bundle} is not an atrest KMS backup`);
    }
    const len = prefix.readUInt32BE(MAGIC.length);
    if (len > MAX_MANIFEST) throw new IntegrityError("backup bundle manifest too large");
    manifestJson = Buffer.alloc(len);
    if ((await fh.read(manifestJson, 0, len, prefix.length)).bytesRead !== len) {
      throw new IntegrityError("backup bundle truncated (manifest)");
    }
    bodyOffset = prefix.length + len;
    try {
      manifest = JSON.parse(manifestJson.toString("utf8")) as Manifest;
    } catch {
      throw new IntegrityError("backup bundle manifest is not JSON");
    }
    if (manifest.format !== FORMAT || manifest.version !== VERSION) {
      throw new AtrestError("UNSUPPORTED", `unsupported KMS backup format ${manifest.format} v${manifest.version}`);
    }
  } finally {
    await fh.close();
  }

  const sealId = Buffer.from(manifest.sealId, "hex");
  const shareTexts = typeof shares === "function" ? await shares(manifest.threshold, manifest.shares) : shares;
  // Shares: checksums first (a mistyped share is named at once), then the combination must open the backup key.
  const parsed = shareTexts.map((t, i) => {
    try {
      return parseShare(t, sealId);
    } catch (e) {
      throw new AtrestError("INVALID_INPUT", `share ${i + 1}: ${(e as Error).message}`);
    }
  });
  const distinct = new Map(parsed.map((p) => [p.x, p.bytes]));
  if (distinct.size < manifest.threshold) {
    throw new AtrestError(
      "INVALID_INPUT",
      `${distinct.size} distinct share(s) given; this KMS needs ${manifest.threshold}`,
    );
  }
  const unsealKey = await combineShares([...distinct.values()]);
  for (const p of parsed) p.bytes.fill(0);
  let bundleKey: Buffer | undefined;
  const work = join(dirname(dir), `.${basename(dir)}.restore-${randomUUID()}`);
  try {
    const backupPrivate = openBackupPrivateKey(Buffer.from(manifest.backupPrivateSealed, "base64"), unsealKey, sealId);
    const ephemeralPublic = Buffer.from(manifest.ephemeralPublic, "base64");
    const backupPublic = Buffer.from(manifest.backupPublic, "base64");
    const shared = diffieHellman({
      privateKey: backupPrivate,
      publicKey: createPublicKey({ key: ephemeralPublic, format: "der", type: "spki" }),
    });
    const kWrap = bundleKeyWrap(shared, ephemeralPublic, backupPublic);
    shared.fill(0);
    try {
      bundleKey = aeadOpen(kWrap, Buffer.from(manifest.wrappedKey, "base64"), Buffer.concat([WRAP_AAD, sealId]));
    } catch {
      throw new IntegrityError("backup bundle key failed authentication (tampered manifest)");
    } finally {
      kWrap.fill(0);
    }

    await mkdir(work, { mode: 0o700 });
    const written: string[] = [];
    const key = bundleKey;
    const plain = decryptStream(createReadStream(bundle, { start: bodyOffset }) as AsyncIterable<Buffer>, (header) =>
      openContainer(header, key, fileIdOf(manifestJson)),
    );
    const r = new Reader(plain);
    try {
      let expected = 0;
      for (;;) {
        const nameLen = (await r.exact(2, "entry")).readUInt16BE(0);
        if (nameLen === 0) break;
        const name = (await r.exact(nameLen, "entry name")).toString("utf8");
        const index = (ENTRIES as readonly string[]).indexOf(name);
        if (index < expected)
          throw new IntegrityError(`backup bundle holds an unexpected entry ${JSON.stringify(name)}`);
        expected = index + 1;
        let left = Number((await r.exact(8, "entry size")).readBigUInt64BE(0));
        const path = join(work, name);
        await mkdir(dirname(path), { recursive: true, mode: 0o700 });
        const out = await open(path, "wx", 0o600);
        try {
          while (left > 0) {
            const chunk = await r.some(Math.min(left, 1 << 20), name);
            await out.write(chunk);
            left -= chunk.length;
          }
          await out.sync();
        } finally {
          await out.close();
        }
        written.push(name);
      }
      // The container authenticates its final segment only when the stream ends: drain it before trusting anything.
      if (!(await r.end())) throw new IntegrityError("backup bundle has data after its archive");
    } finally {
      await r.return();
    }
    for (const name of REQUIRED) {
      if (!written.includes(name)) throw new IntegrityError(`backup bundle lacks ${name}`);
    }
    // The restored database must be the KMS these shares unseal.
    const db = new KmsDb(join(work, KMS_DB));
    try {
      const c = readSealConfig(db, work);
      if (c?.kind !== "shamir" || c.sealId !== manifest.sealId) {
        throw new IntegrityError("restored kms.db does not belong to the backup's KMS");
      }
      verifyUnsealKey(db, c, unsealKey);
    } finally {
      db.close();
    }
    await syncDir(work);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dirname(dir), { recursive: true, mode: 0o700 });
    await rename(work, dir);
    await syncDir(dirname(dir));
    return { dir, files: written, createdAt: manifest.createdAt };
  } finally {
    unsealKey.fill(0);
    bundleKey?.fill(0);
    await rm(work, { recursive: true, force: true });
  }
}
