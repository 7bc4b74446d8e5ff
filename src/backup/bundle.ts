// `atrest backup` / `atrest restore`: the file server's metadata (the store's snapshot(), a point-in-time copy taken
// while the server runs, as entry meta.db; and kms-remote.json) in one encrypted, integrity-protected bundle.
//
// Layout: "ATRBKP1\n" ‖ u32 manifest length ‖ manifest (JSON: entries with name, size, sha256) ‖ an atrest container
// (docs/format.md) holding the entries back to back. The container's DEK comes from the key manager (key `default`,
// context {purpose: "backup", manifest: sha256(manifest)}) and its file id is that hash, so the manifest, the header
// and every segment are authenticated and a bundle is useless without the key manager, like the data it describes.
// meta.db itself holds only wrapped keys and ciphertext names; the bundle adds a second layer and hides user names,
// sizes and the tree's shape. SSH host keys are not included (they are secrets: back them up with the key manager).
import { createHash, randomUUID } from "node:crypto";
import { createReadStream } from "node:fs";
import { type FileHandle, mkdir, open, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { decryptStream, encryptStream } from "../container-io/streams.ts";
import { zero } from "../crypto/bytes.ts";
import { AtrestError, IntegrityError } from "../errors.ts";
import { createHeader, openContainer } from "../format/container.ts";
import type { ParsedHeader } from "../format/header.ts";
import { syncDir, writeDurable } from "../fsutil/durable.ts";
import type { KeyManager } from "../keys/provider.ts";
import type { MetaStore } from "../store/types.ts";

const MAGIC = Buffer.from("ATRBKP1\n", "latin1");
const KEY = "default";

export interface BundleEntry {
  name: string;
  size: number;
  sha256: string;
}

export interface Manifest {
  format: 1;
  created: string;
  entries: BundleEntry[];
}

/** How a restore finds and installs the data dir's store (the wiring knows the driver: app.ts storeRestore). */
export interface StoreRestore {
  exists(): Promise<boolean>;
  /** Installs a snapshot file (consumed) as the data dir's store, replacing any. */
  install(snapshot: string): Promise<void>;
}

/** Files of the data dir that make up its metadata; meta.db is snapshotted, the others copied. */
const OPTIONAL_FILES = ["kms-remote.json"];

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  const fh = await open(path, "r");
  try {
    for await (const chunk of fh.readableWebStream()) hash.update(chunk as Uint8Array);
  } finally {
    await fh.close();
  }
  return hash.digest("hex");
}

function context(manifestHash: string) {
  return { purpose: "backup", manifest: manifestHash };
}

export async function writeBackup(
  dataDir: string,
  out: string,
  keys: KeyManager,
  store: Pick<MetaStore, "snapshot">,
): Promise<Manifest> {
  const work = join(dirname(out), `.atrest-backup-${randomUUID()}`);
  await mkdir(work, { mode: 0o700 });
  try {
    const sources: { name: string; path: string }[] = [];
    const snapshot = join(work, "meta.db");
    await store.snapshot(snapshot);
    sources.push({ name: "meta.db", path: snapshot });
    for (const name of OPTIONAL_FILES) {
      const path = join(dataDir, name);
      if (await stat(path).catch(() => undefined)) sources.push({ name, path });
    }
    const entries: BundleEntry[] = [];
    for (const s of sources)
      entries.push({ name: s.name, size: (await stat(s.path)).size, sha256: await sha256File(s.path) });
    const manifest: Manifest = { format: 1, created: new Date().toISOString(), entries };
    const manifestBytes = Buffer.from(JSON.stringify(manifest), "utf8");
    const id = createHash("sha256").update(manifestBytes).digest("hex");
    const dk = await keys.generateDataKey(KEY, context(id));
    const { header, keys: ck } = (() => {
      try {
        return createHeader({ dek: dk.plaintext, fileId: `backup:${id}`, wrappedDek: dk.wrapped });
      } finally {
        zero(dk.plaintext);
      }
    })();
    await writeDurable(out, async (fh) => {
      const len = Buffer.alloc(4);
      len.writeUInt32BE(manifestBytes.length);
      await fh.write(Buffer.concat([MAGIC, len, manifestBytes]));
      // Entries back to back in one container, streamed: memory stays flat whatever the database size.
      await pipeline(concatFiles(sources.map((s) => s.path)), encryptStream(header, ck), async (sealed) => {
        for await (const piece of sealed as AsyncIterable<Buffer>) await fh.write(piece);
      });
    }).finally(() => ck.destroy());
    return manifest;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** The files' bytes back to back. */
async function* concatFiles(paths: string[]): AsyncGenerator<Buffer> {
  for (const path of paths) {
    const src = await open(path, "r");
    try {
      for await (const chunk of src.readableWebStream()) {
        const bytes = chunk as Uint8Array;
        yield Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      }
    } finally {
      await src.close();
    }
  }
}

async function readExactly(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const out = Buffer.alloc(length);
  const { bytesRead } = await fh.read(out, 0, length, position);
  if (bytesRead !== length) throw new IntegrityError("backup bundle truncated");
  return out;
}

/** Reads the manifest without the key manager (what a bundle holds, for `restore --list`). */
export async function readManifest(file: string): Promise<{ manifest: Manifest; bodyAt: number; id: string }> {
  const fh = await open(file, "r");
  try {
    const head = await readExactly(fh, 0, MAGIC.length + 4);
    if (!head.subarray(0, MAGIC.length).equals(MAGIC)) throw new IntegrityError(`${file} is not an atrest backup`);
    const n = head.readUInt32BE(MAGIC.length);
    if (n > 1 << 20) throw new IntegrityError("backup manifest too large");
    const bytes = await readExactly(fh, MAGIC.length + 4, n);
    const manifest = JSON.parse(bytes.toString("utf8")) as Manifest;
    if (manifest.format !== 1 || !Array.isArray(manifest.entries)) throw new IntegrityError("unknown backup format");
    for (const e of manifest.entries) {
      if (!["meta.db", ...OPTIONAL_FILES].includes(e.name)) throw new IntegrityError(`unexpected entry ${e.name}`);
    }
    return { manifest, bodyAt: MAGIC.length + 4 + n, id: createHash("sha256").update(bytes).digest("hex") };
  } finally {
    await fh.close();
  }
}

/**
 * Decrypts and checks the whole bundle before anything is installed, then puts each file in place (temp → fsync →
 * rename). Refuses to replace an existing meta.db unless `force`.
 */
export async function restoreBackup(
  file: string,
  dataDir: string,
  keys: KeyManager,
  store: StoreRestore,
  force = false,
): Promise<Manifest> {
  const { manifest, bodyAt, id } = await readManifest(file);
  if ((await store.exists()) && !force) {
    throw new AtrestError(
      "EXISTS",
      `${join(dataDir, "meta.db")} exists: restore into an empty data directory, or --force`,
    );
  }
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const staged: { name: string; tmp: string }[] = [];
  try {
    const keysFor = async (header: ParsedHeader) => {
      let dek: Buffer;
      try {
        dek = await keys.unwrap(header.wrappedDek, context(id));
      } catch (err) {
        const e = err as AtrestError;
        throw new AtrestError(
          e.code === "INTEGRITY" ? "INTEGRITY" : "KEY_UNAVAILABLE",
          `cannot open the backup's key (${e.message}); restore needs the key manager the backup was made with`,
        );
      }
      try {
        return openContainer(header, dek, `backup:${id}`);
      } finally {
        zero(dek);
      }
    };
    const plain = decryptStream(createReadStream(file, { start: bodyAt }), keysFor)[Symbol.asyncIterator]();
    try {
      let carry: Buffer = Buffer.alloc(0);
      for (const entry of manifest.entries) {
        const tmp = join(dataDir, `.${entry.name}.restore-${process.pid}`);
        const out = await open(tmp, "w", 0o600);
        staged.push({ name: entry.name, tmp });
        const hash = createHash("sha256");
        try {
          let left = entry.size;
          while (left > 0) {
            if (carry.length === 0) {
              const next = await plain.next();
              if (next.done) throw new IntegrityError("backup bundle shorter than its manifest");
              carry = next.value;
            }
            const piece = carry.subarray(0, Math.min(left, carry.length));
            carry = carry.subarray(piece.length);
            hash.update(piece);
            await out.write(piece);
            left -= piece.length;
          }
          await out.sync();
        } finally {
          await out.close();
        }
        if (hash.digest("hex") !== entry.sha256) throw new IntegrityError(`backup entry ${entry.name} does not match`);
      }
      // Drain to the end: the final segment's authentication is what proves nothing was cut off or appended.
      for (let next = await plain.next(); !next.done; next = await plain.next()) {
        if (carry.length > 0 || next.value.length > 0)
          throw new IntegrityError("backup bundle longer than its manifest");
      }
      if (carry.length > 0) throw new IntegrityError("backup bundle longer than its manifest");
    } finally {
      await plain.return(undefined);
    }
    for (const s of staged) {
      if (s.name === "meta.db") await store.install(s.tmp);
      else await rename(s.tmp, join(dataDir, s.name));
    }
    staged.length = 0;
    await syncDir(dataDir);
    return manifest;
  } finally {
    for (const s of staged) await rm(s.tmp, { force: true });
  }
}
