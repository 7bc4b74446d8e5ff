// Versioned application secrets (API keys, passwords, connection strings) in kms.db. Each version's value is sealed
// under the master key (seal.ts, label "app-secret:<name>:v<version>", so a row cannot be moved to another name or
// version), re-sealed on master rotation, and shredded (sealed value removed) when the secret is removed. A secret may
// carry a rotation reminder: `rotateAfterDays` after its current version was written it is listed as due, and the
// scheduler writes one warning audit event per due version. Authorization and audit are secret-ops.ts's.

import { AtrestError } from "../errors.ts";
import { isValidKeyName } from "./api/key-ref.ts";
import type { KmsDb } from "./db.ts";
import type { Keyring } from "./keyring.ts";
import { appSecretLabel } from "./master-secrets.ts";

export const MAX_SECRET_BYTES = 64 * 1024;
const DAY_MS = 86_400_000;

export interface SecretInfo {
  name: string;
  currentVersion: number;
  createdAt: string;
  /** When the current version was written. */
  updatedAt: string;
  rotateAfterDays?: number;
  /** updatedAt + rotateAfterDays. */
  rotateAt?: string;
  rotationDue: boolean;
}

export interface SecretVersionInfo {
  version: number;
  createdAt: string;
  createdBy: string;
  /** Removed with the secret (`kms secret rm`): its value is gone. */
  destroyed: boolean;
}

export interface SecretValue {
  name: string;
  version: number;
  createdAt: string;
  /** A fresh buffer the caller owns and must zero. */
  value: Buffer;
  rotationDue: boolean;
}

interface SecretRow {
  name: string;
  current_version: number;
  rotate_after_days: number | null;
  created_at: string;
  deleted_at: string | null;
  warned_version: number | null;
}

export function assertSecretName(name: unknown): asserts name is string {
  if (!isValidKeyName(name)) {
    const shown = typeof name === "string" ? JSON.stringify(name.slice(0, 80)) : typeof name;
    throw new AtrestError("INVALID_INPUT", `invalid secret name ${shown}: expected [a-z0-9][a-z0-9._-]{0,62}`);
  }
}

const label = appSecretLabel;

export class SecretStore {
  readonly #keyring: Keyring;
  readonly #db: KmsDb;

  constructor(keyring: Keyring) {
    this.#keyring = keyring;
    this.#db = keyring.db;
  }

  #row(name: string): SecretRow | undefined {
    return this.#db.prepare("SELECT * FROM secrets WHERE name = ?").get(name) as SecretRow | undefined;
  }

  #live(name: string): SecretRow {
    assertSecretName(name);
    const row = this.#row(name);
    if (!row || row.deleted_at !== null) throw new AtrestError("NOT_FOUND", `unknown secret: ${name}`);
    return row;
  }

  /**
   * Writes a new version (version 1 of a new secret, or the next one) and makes it current. `rotateAfterDays`
   * undefined keeps the reminder, null clears it.
   */
  put(name: string, value: Buffer, by: string, rotateAfterDays?: number | null): SecretInfo {
    assertSecretName(name);
    if (!Buffer.isBuffer(value) || value.length === 0 || value.length > MAX_SECRET_BYTES) {
      throw new AtrestError("INVALID_INPUT", `a secret value is 1 to ${MAX_SECRET_BYTES} bytes`);
    }
    if (
      rotateAfterDays != null &&
      (!Number.isInteger(rotateAfterDays) || rotateAfterDays < 1 || rotateAfterDays > 3650)
    ) {
      throw new AtrestError("INVALID_INPUT", "rotate-after must be 1 to 3650 days");
    }
    const at = this.#keyring.now().toISOString();
    this.#db.transaction(() => {
      const row = this.#row(name);
      const max = (
        this.#db.prepare("SELECT MAX(version) AS v FROM secret_versions WHERE name = ?").get(name) as {
          v: number | null;
        }
      ).v;
      const version = (max ?? 0) + 1;
      const days =
        rotateAfterDays === undefined ? (row?.deleted_at === null ? row.rotate_after_days : null) : rotateAfterDays;
      if (!row) {
        this.#db
          .prepare("INSERT INTO secrets (name, current_version, rotate_after_days, created_at) VALUES (?, ?, ?, ?)")
          .run(name, version, days, at);
      } else {
        this.#db
          .prepare(
            "UPDATE secrets SET current_version = ?, rotate_after_days = ?, deleted_at = NULL, created_at = CASE WHEN deleted_at IS NULL THEN created_at ELSE ? END WHERE name = ?",
          )
          .run(version, days, at, name);
      }
      this.#db
        .prepare("INSERT INTO secret_versions (name, version, sealed, created_at, created_by) VALUES (?, ?, ?, ?, ?)")
        .run(name, version, this.#keyring.sealSecret(label(name, version), value), at, by);
    });
    return this.info(name);
  }

  /** The current version, or `version`; refuses a removed secret or version. */
  get(name: string, version?: number): SecretValue {
    const row = this.#live(name);
    const v = version ?? row.current_version;
    const ver = this.#db
      .prepare("SELECT version, sealed, created_at FROM secret_versions WHERE name = ? AND version = ?")
      .get(name, v) as { version: number; sealed: Uint8Array | null; created_at: string } | undefined;
    if (!ver) throw new AtrestError("NOT_FOUND", `unknown secret version: ${name} v${v}`);
    if (!ver.sealed) throw new AtrestError("KEY_UNAVAILABLE", `secret ${name} v${v} was destroyed`);
    return {
      name,
      version: v,
      createdAt: ver.created_at,
      value: this.#keyring.openSecret(label(name, v), ver.sealed),
      rotationDue: this.#due(row, this.#keyring.now()),
    };
  }

  info(name: string): SecretInfo {
    return this.#toInfo(this.#live(name), this.#keyring.now());
  }

  list(): SecretInfo[] {
    const now = this.#keyring.now();
    const rows = this.#db
      .prepare("SELECT * FROM secrets WHERE deleted_at IS NULL ORDER BY name")
      .all() as unknown as SecretRow[];
    return rows.map((r) => this.#toInfo(r, now));
  }

  versions(name: string): SecretVersionInfo[] {
    this.#live(name);
    const rows = this.#db
      .prepare(
        "SELECT version, created_at, created_by, destroyed_at FROM secret_versions WHERE name = ? ORDER BY version",
      )
      .all(name) as { version: number; created_at: string; created_by: string; destroyed_at: string | null }[];
    return rows.map((r) => ({
      version: r.version,
      createdAt: r.created_at,
      createdBy: r.created_by,
      destroyed: r.destroyed_at !== null,
    }));
  }

  /** Removes the secret: every version's sealed value is deleted for good; the names and dates stay for the audit. */
  remove(name: string): number {
    this.#live(name);
    const at = this.#keyring.now().toISOString();
    return this.#db.transaction(() => {
      const n = Number(
        this.#db
          .prepare("UPDATE secret_versions SET sealed = NULL, destroyed_at = ? WHERE name = ? AND destroyed_at IS NULL")
          .run(at, name).changes,
      );
      this.#db.prepare("UPDATE secrets SET deleted_at = ? WHERE name = ?").run(at, name);
      return n;
    });
  }

  /** Secrets whose rotation reminder has come and that were not warned about yet (marked warned here). */
  takeNewlyDue(now: Date): SecretInfo[] {
    return this.#db.transaction(() => {
      const out: SecretInfo[] = [];
      const rows = this.#db
        .prepare("SELECT * FROM secrets WHERE deleted_at IS NULL AND rotate_after_days IS NOT NULL")
        .all() as unknown as SecretRow[];
      for (const r of rows) {
        if (!this.#due(r, now) || r.warned_version === r.current_version) continue;
        this.#db.prepare("UPDATE secrets SET warned_version = ? WHERE name = ?").run(r.current_version, r.name);
        out.push(this.#toInfo(r, now));
      }
      return out;
    });
  }

  #updatedAt(r: SecretRow): string {
    return (
      this.#db
        .prepare("SELECT created_at FROM secret_versions WHERE name = ? AND version = ?")
        .get(r.name, r.current_version) as { created_at: string }
    ).created_at;
  }

  #due(r: SecretRow, now: Date): boolean {
    if (r.rotate_after_days === null) return false;
    return Date.parse(this.#updatedAt(r)) + r.rotate_after_days * DAY_MS <= now.getTime();
  }

  #toInfo(r: SecretRow, now: Date): SecretInfo {
    const updatedAt = this.#updatedAt(r);
    const info: SecretInfo = {
      name: r.name,
      currentVersion: r.current_version,
      createdAt: r.created_at,
      updatedAt,
      rotationDue: this.#due(r, now),
    };
    if (r.rotate_after_days !== null) {
      info.rotateAfterDays = r.rotate_after_days;
      info.rotateAt = new Date(Date.parse(updatedAt) + r.rotate_after_days * DAY_MS).toISOString();
    }
    return info;
  }
}
