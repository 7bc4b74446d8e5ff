// Redo journal for in-place header rewrites (`keys rewrap`).
//
// Why rewrap is crash-safe: before any header is overwritten, the batch's new header bytes (the wrapped-DEK field
// with its length and the zero padding after it: the only bytes a rewrap changes; blob id, node id, new key ref) are
// written to a journal file (temp → fsync → rename → fsync dir, so a journal file is complete
// or absent). Only then are the headers written in place, and the journal is deleted only after those writes were
// flushed to stable storage. A crash at any point leaves either no journal (nothing was touched, or everything is
// durable) or a complete journal, and replaying it — rewriting each listed header with the journaled bytes — is
// idempotent. So a header torn by a power cut mid-write (old and new bytes mixed within the slot) is always
// repaired from the journal: the write only ever touches the journaled range. Nothing secret is journaled: a wrapped
// DEK is stored beside the data anyway.
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { IntegrityError } from "../errors.ts";
import { syncDirSync, writeFileDurable } from "../fsutil/durable.ts";
import type { HeadAccess } from "../store/blobs.ts";
import type { MetaStore } from "../store/types.ts";

export interface JournalEntry {
  nodeId: string;
  /** The blob whose header is rewritten. */
  blobId: string;
  /** A piece of a pieced file: the file's own blob (nodes.blob_id), which the key ref update is conditioned on. */
  fileBlob?: string;
  /** Where the new bytes go in the blob (inside the header slot). */
  offset: number;
  bytes: Buffer;
  keyRef: string;
}

const SUFFIX = ".journal";

export class HeaderJournal {
  readonly dir: string;
  #seq = 0;

  constructor(dir: string) {
    this.dir = dir;
  }

  /** Durably records a batch; returns the journal file's name. */
  async append(entries: JournalEntry[]): Promise<string> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const name = `${Date.now().toString().padStart(15, "0")}-${process.pid}-${String(this.#seq++).padStart(8, "0")}`;
    const lines = entries.map((e) =>
      JSON.stringify({
        n: e.nodeId,
        b: e.blobId,
        ...(e.fileBlob ? { f: e.fileBlob } : {}),
        k: e.keyRef,
        o: e.offset,
        h: e.bytes.toString("base64"),
      }),
    );
    // The temp name ends in .tmp: files() clears those a crash left.
    await writeFileDurable(
      join(this.dir, name + SUFFIX),
      `${JSON.stringify({ v: 1, count: entries.length })}\n${lines.join("\n")}\n`,
    );
    return name + SUFFIX;
  }

  /** Journal files, oldest first. Leftover temp files (a crash before the rename) are deleted: nothing used them. */
  async files(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    for (const n of names.filter((n) => n.endsWith(".tmp"))) await rm(join(this.dir, n), { force: true });
    return names.filter((n) => n.endsWith(SUFFIX)).sort();
  }

  async read(file: string): Promise<JournalEntry[]> {
    const text = await readFile(join(this.dir, file), "utf8");
    const lines = text.split("\n").filter(Boolean);
    const head = JSON.parse(lines[0] ?? "{}") as { v?: number; count?: number };
    if (head.v !== 1 || head.count !== lines.length - 1) {
      throw new IntegrityError(`rewrap journal ${file} is damaged (expected ${head.count} entries)`);
    }
    return lines.slice(1).map((line) => {
      const e = JSON.parse(line) as { n: string; b: string; f?: string; k: string; o: number; h: string };
      return {
        nodeId: e.n,
        blobId: e.b,
        ...(e.f ? { fileBlob: e.f } : {}),
        keyRef: e.k,
        offset: e.o,
        bytes: Buffer.from(e.h, "base64"),
      };
    });
  }

  async remove(files: string[]): Promise<void> {
    for (const f of files) await rm(join(this.dir, f), { force: true });
    if (files.length > 0) syncDirSync(this.dir);
  }
}

/**
 * Finishes whatever a crashed rewrap left in the journal: rewrites each journaled header that differs, flushes, points
 * the files' key refs at the new versions, then deletes the journal. Returns how many headers were rewritten.
 */
export async function replayJournal(journal: HeaderJournal, heads: HeadAccess, store: MetaStore): Promise<number> {
  const files = await journal.files();
  if (files.length === 0) return 0;
  let repaired = 0;
  const updates: JournalEntry[] = [];
  for (const file of files) {
    for (const entry of await journal.read(file)) {
      const end = entry.offset + entry.bytes.length;
      const current = heads.read(entry.blobId, end);
      if (current === undefined) continue; // the file was replaced or deleted since: nothing to repair
      if (current.length < end || !current.subarray(entry.offset).equals(entry.bytes)) {
        heads.write(entry.blobId, entry.bytes, entry.offset);
        repaired++;
      }
      updates.push(entry);
    }
  }
  await heads.flush();
  await store.transaction(async (tx) => {
    for (const e of updates) await tx.updateNodeIfBlob(e.nodeId, e.fileBlob ?? e.blobId, { keyRef: e.keyRef });
  });
  await journal.remove(files);
  return repaired;
}
