import { createWriteStream, mkdirSync, type WriteStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname } from "node:path";
import { NONCE_LENGTH, open, seal } from "../crypto/aead.ts";
import { zero } from "../crypto/bytes.ts";
import { randomBytes } from "../crypto/random.ts";
import type { AuditEvent, AuditSink } from "./types.ts";

export type AuditRecord = AuditEvent & { time: string };

const PREFIX = "v1:";
const AAD = Buffer.from("atrest audit v1");

/**
 * Append-only audit file, one record per line. Records name paths and users, which a disk thief must not read,
 * so each line is AES-256-GCM sealed under the audit key (itself wrapped by the key manager). The audit issue adds
 * the hash chain and SIEM shipping; the record shape stays.
 */
export class AuditLog implements AuditSink {
  readonly #out: WriteStream;
  readonly #key: Buffer;
  readonly #listeners = new Set<(e: AuditRecord) => void>();

  /** Takes ownership of `key` (zeroed on close). */
  constructor(path: string, key: Buffer) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.#out = createWriteStream(path, { flags: "a", mode: 0o600 });
    this.#key = key;
  }

  record(event: AuditEvent): void {
    const record: AuditRecord = { time: new Date().toISOString(), ...event };
    const sealed = seal(this.#key, randomBytes(NONCE_LENGTH), Buffer.from(JSON.stringify(record)), AAD);
    this.#out.write(`${PREFIX}${sealed.toString("base64")}\n`);
    for (const listener of this.#listeners) listener(record);
  }

  onRecord(listener: (e: AuditRecord) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  close(): Promise<void> {
    return new Promise((resolve) =>
      this.#out.end(() => {
        zero(this.#key);
        resolve();
      }),
    );
  }
}

/** Decrypts an audit file written by AuditLog (a failed line yields an `integrity` marker, not an exception). */
export async function readAuditLog(
  path: string,
  key: Buffer,
): Promise<(AuditRecord | { integrity: "failed"; line: number })[]> {
  const text = await readFile(path, "utf8").catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return "";
    throw err;
  });
  return text
    .split("\n")
    .filter(Boolean)
    .map((line, i) => {
      try {
        if (!line.startsWith(PREFIX)) throw new Error("unknown record version");
        return JSON.parse(open(key, Buffer.from(line.slice(PREFIX.length), "base64"), AAD).toString()) as AuditRecord;
      } catch {
        return { integrity: "failed" as const, line: i + 1 };
      }
    });
}
