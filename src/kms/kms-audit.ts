// The key manager's own audit log: the same hash-chained, sealed, checkpoint-signed AuditLog the file server uses,
// in the KMS directory (`audit/kms-audit.log`). The KMS has no other KMS to wrap its audit key, so the record key and
// the checkpoint signing seed are random secrets kept in kms.db sealed under the master key (Keyring.namedSecret);
// they are re-sealed, not changed, when the master key rotates, so old records stay readable. Until the master key is
// available (a sealed KMS), events (unseal attempts, refused calls) are buffered in memory and written once unsealed.

import { createPrivateKey, createPublicKey, createSecretKey, type KeyObject } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { keyFingerprint, type Signer } from "../audit/chain.ts";
import { AuditLog, readAuditLog } from "../audit/log.ts";
import type { AuditEvent, AuditRecord, AuditSink } from "../audit/types.ts";
import type { Keyring } from "./keyring.ts";

export const KMS_AUDIT_FILE = join("audit", "kms-audit.log");
export const KMS_AUDIT_PUBLIC_KEY_FILE = join("audit", "kms-audit.pub");
const RECORD_KEY = "kms-audit-record-key";
const SIGNING_SEED = "kms-audit-checkpoint-seed";
/** PKCS#8 DER prefix of an Ed25519 private key; the 32-byte seed follows (RFC 8410). */
const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
export const DEFAULT_BUFFER_LIMIT = 10_000;

export interface KmsAuditOptions {
  /** Events kept while sealed; beyond it the oldest are dropped and counted (default 10 000). */
  bufferLimit?: number;
  checkpointEvery?: number;
  /**
   * Write every record before the operation returns (and throw if it cannot be written), for KmsService's failClosed.
   * Default false: records are group-committed (one locked write per batch, at the end of the current tick), which is
   * what lets the unwrap path run at tens of thousands per second.
   */
  failClosed?: boolean;
}

export class KmsAudit implements AuditSink {
  readonly path: string;
  readonly #dir: string;
  readonly #limit: number;
  readonly #checkpointEvery: number | undefined;
  readonly #failClosed: boolean;
  #log: AuditLog | undefined;
  #recordKey: KeyObject | undefined;
  #buffer: AuditRecord[] = [];
  #dropped = 0;

  /** `dir` is the KMS directory. Nothing is opened until unseal(). */
  constructor(dir: string, options: KmsAuditOptions = {}) {
    this.#dir = dir;
    this.path = join(dir, KMS_AUDIT_FILE);
    this.#limit = options.bufferLimit ?? DEFAULT_BUFFER_LIMIT;
    this.#checkpointEvery = options.checkpointEvery;
    this.#failClosed = options.failClosed ?? false;
  }

  get sealed(): boolean {
    return this.#log === undefined;
  }

  /** Events dropped because the buffer was full while sealed. */
  get dropped(): number {
    return this.#dropped;
  }

  record(event: AuditEvent): void {
    if (this.#log) {
      this.#log.record(event);
      return;
    }
    // Keep when it happened: AuditLog stamps records as written, so carry the original time along.
    if (this.#buffer.length >= this.#limit) {
      this.#buffer.shift();
      this.#dropped++;
    }
    this.#buffer.push({ ...event, time: new Date().toISOString() });
  }

  /** Opens the log with keys kept under the master key, then writes the buffered events in order. */
  unseal(keyring: Keyring): void {
    if (this.#log) return;
    const key = keyring.namedSecret(RECORD_KEY);
    this.#recordKey = createSecretKey(key);
    const signer = signerFrom(keyring);
    const log = new AuditLog(this.path, key, {
      signer,
      groupCommit: !this.#failClosed,
      failClosed: this.#failClosed,
      ...(this.#checkpointEvery ? { checkpointEvery: this.#checkpointEvery } : {}),
    });
    // Not secret: `atrest audit verify --file … --public-key "$(cat …)"` checks the checkpoints without the KMS.
    writeFileSync(join(this.#dir, KMS_AUDIT_PUBLIC_KEY_FILE), `${publicKeyBase64(signer.privateKey)}\n`);
    const pending = this.#buffer;
    this.#buffer = [];
    for (const e of pending) log.record(e);
    if (this.#dropped > 0) {
      log.record({
        action: "kms.unseal",
        outcome: "failure",
        user: "kms",
        protocol: "kms",
        reason: `${this.#dropped} audit events were dropped while sealed (buffer limit ${this.#limit})`,
      });
      this.#dropped = 0;
    }
    this.#log = log;
  }

  /** The open log and its record key, for the SIEM pipeline (undefined while sealed). */
  get source(): { log: AuditLog; key: KeyObject } | undefined {
    return this.#log && this.#recordKey ? { log: this.#log, key: this.#recordKey } : undefined;
  }

  /** Writes records still queued for a group commit (AuditLog batches writes when it can). */
  flush(): void {
    this.#log?.flush();
  }

  /** Closes the log (writing a final checkpoint); later events are buffered until the next unseal. */
  async seal(): Promise<void> {
    const log = this.#log;
    this.#log = undefined;
    this.#recordKey = undefined;
    await log?.close();
  }

  async close(): Promise<void> {
    await this.seal();
    this.#buffer = [];
  }
}

/** Decrypts the KMS audit log (needs the unsealed keyring). */
export async function readKmsAudit(
  dir: string,
  keyring: Keyring,
  writer?: KmsAudit,
): Promise<(AuditRecord | { integrity: "failed"; line: number })[]> {
  writer?.flush();
  const key = keyring.namedSecret(RECORD_KEY);
  try {
    return await readAuditLog(join(dir, KMS_AUDIT_FILE), key);
  } finally {
    key.fill(0);
  }
}

function signerFrom(keyring: Keyring): Signer {
  const seed = keyring.namedSecret(SIGNING_SEED);
  const der = Buffer.concat([ED25519_PKCS8_PREFIX, seed]);
  try {
    const privateKey = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
    return { privateKey, fingerprint: keyFingerprint(createPublicKey(privateKey)) };
  } finally {
    seed.fill(0);
    der.fill(0);
  }
}

function publicKeyBase64(privateKey: KeyObject): string {
  return createPublicKey(privateKey).export({ format: "der", type: "spki" }).toString("base64");
}
