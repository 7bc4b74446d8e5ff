// In-process KMS for governance tests: a fresh kms.db, a random master key, a KmsService with a movable test clock
// and an in-memory audit sink (the real KMS audit log has its own tests). ATREST_TEST_KMS_PG=1 puts the database in
// a fresh PostgreSQL schema instead (the KMS's PostgreSQL driver under the same tests).
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AuditEvent } from "../../src/audit/types.ts";
import type { KmsCaller } from "../../src/kms/api/caller.ts";
import { KmsDb } from "../../src/kms/db.ts";
import { Keyring } from "../../src/kms/keyring.ts";
import { KmsService, type KmsServiceOptions } from "../../src/kms/service.ts";
import { dropSchema, pgUrl, testSchema } from "../helpers/pg.ts";

export const operator: KmsCaller = { name: "olga", role: "operator", certFingerprint: "ab".repeat(32) };
export const server: KmsCaller = { name: "fs1", role: "server", sourceIp: "127.0.0.1" };
export const alice: KmsCaller = { name: "alice", role: "custodian" };
export const bob: KmsCaller = { name: "bob", role: "custodian" };
export const carol: KmsCaller = { name: "carol", role: "custodian" };
export const auditor: KmsCaller = { name: "audrey", role: "auditor" };
export const admin: KmsCaller = { name: "adam", role: "admin" };

export const DAY = 86_400_000;

export class Clock {
  t: number;
  constructor(start = Date.parse("2030-01-01T00:00:00Z")) {
    this.t = start;
  }
  now = (): Date => new Date(this.t);
  advanceDays(days: number): void {
    this.t += days * DAY;
  }
}

export interface Fixture {
  dir: string;
  db: KmsDb;
  kms: KmsService;
  clock: Clock;
  events: AuditEvent[];
  master: Buffer;
  close(): Promise<void>;
}

export async function openFixture(options: Partial<KmsServiceOptions> = {}): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), "atrest-kmsk-"));
  const clock = new Clock();
  const schema = process.env.ATREST_TEST_KMS_PG === "1" ? testSchema() : undefined;
  const db = new KmsDb(schema ? pgUrl(schema) : join(dir, "kms.db"));
  const master = randomBytes(32);
  Keyring.initialise(db, master, clock.now);
  const events: AuditEvent[] = [];
  const kms = new KmsService(new Keyring(db, Buffer.from(master), { now: clock.now, refreshMs: 0 }), {
    auditLog: { record: (e) => events.push(e) },
    ...options,
  });
  return {
    dir,
    db,
    kms,
    clock,
    events,
    master,
    async close() {
      kms.close();
      db.close();
      if (schema) await dropSchema(schema);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Extra `initKmsDir` options: a fresh PostgreSQL schema with ATREST_TEST_KMS_PG=1, else none (kms.db). */
export function testKmsStore(): { store?: string } {
  return process.env.ATREST_TEST_KMS_PG === "1" ? { store: pgUrl(testSchema()) } : {};
}

export function isErr(code: string, re?: RegExp) {
  return (e: unknown) => {
    const err = e as { code?: string; message?: string };
    if (err?.code !== code) throw new Error(`expected ${code}, got ${err?.code}: ${err?.message}`);
    if (re && !re.test(err.message ?? "")) throw new Error(`message ${JSON.stringify(err.message)} !~ ${re}`);
    return true;
  };
}
