// Scale-out stores (issue 15): small-file uploads/s through the vfs with the metadata in SQLite vs PostgreSQL (same
// process, embedded KMS, local blobs), and blob store write/read MB/s of the S3 backend (s3rver in its own process on
// loopback) vs the local-disk backend, in the same run.
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { App, initData } from "../src/app.ts";
import type { BlobStore } from "../src/store/blobs.ts";
import { LocalBlobStore } from "../src/store/local-blobs.ts";
import { S3BlobStore } from "../src/store/s3-blobs.ts";
import { startS3rverProcess } from "../test/helpers/s3rver.ts";
import type { BenchContext, BenchModule, BenchSection } from "./lib/types.ts";

const PG = process.env.ATREST_TEST_PG || "postgres://postgres@127.0.0.1:5432/test";
const info = { protocol: "cli" as const, sessionId: "bench" };

/** `files` uploads of 4 KiB by `concurrency` writers; files/s. */
async function smallUploads(dir: string, meta: string | undefined, files: number, concurrency: number) {
  await initData(dir);
  const app = await App.open(dir, meta ? { meta: { url: meta } } : {});
  try {
    await app.addUser({ name: "bench", password: "bench-password-1" });
    const s = await app.openSession("bench", info);
    const body = randomBytes(4096);
    let next = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        for (let i = next++; i < files; i = next++) {
          const h = await s.openWrite(`/f${i}.bin`, { truncate: true });
          await h.write(0, body);
          await h.close();
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    await s.close();
    return files / seconds;
  } finally {
    await app.close();
  }
}

/** Writes then reads back `mib` MiB as one blob in 256 KiB writes / 1 MiB reads; MB/s both ways. */
async function blobThroughput(store: BlobStore, mib: number): Promise<{ write: number; read: number }> {
  const chunk = randomBytes(256 * 1024);
  const total = mib * 1024 * 1024;
  let t = performance.now();
  const w = await store.create();
  for (let at = 0; at < total; at += chunk.length) await w.write([chunk]);
  await w.commit();
  const write = total / 1e6 / ((performance.now() - t) / 1000);
  t = performance.now();
  const r = await store.open(w.id);
  const hash = createHash("sha256");
  for (let at = 0; at < r.size; at += 1024 * 1024) hash.update(await r.read(at, 1024 * 1024));
  await r.close();
  const read = total / 1e6 / ((performance.now() - t) / 1000);
  await store.remove(w.id);
  return { write, read };
}

export const scaleout: BenchModule = {
  name: "scaleout",
  title: "Scale-out stores: SQLite vs PostgreSQL metadata, local disk vs S3 blobs",
  method: [
    "scaleout: small-file uploads (4 KiB, 8 concurrent writers, in-process vfs, embedded KMS, local blobs) with the metadata in SQLite vs the local PostgreSQL 15 (its own schema, dropped after); blob store throughput of one blob written in 256 KiB writes and read back in 1 MiB reads, local disk vs the S3 backend on s3rver (an npm S3 server, its own process, files on the same disk) over loopback.",
  ],
  async run(ctx: BenchContext): Promise<BenchSection> {
    const files = ctx.quick ? 300 : 2000;
    const mib = ctx.quick ? 32 : 256;
    const loadBefore = loadavg()[0].toFixed(1);
    const schema = `bench_${randomBytes(6).toString("hex")}`;
    const admin = new pg.Client({ connectionString: PG });
    await admin.connect();
    const u = new URL(PG);
    u.searchParams.set("schema", schema);
    const rows: string[][] = [["workload", "SQLite / local disk", "PostgreSQL / S3 (s3rver)", "ratio"]];
    const summary: string[] = [];
    try {
      const best = async (f: () => Promise<number>) => {
        let b = 0;
        for (let i = 0; i < ctx.runs; i++) b = Math.max(b, await f());
        return b;
      };
      let run = 0;
      const sqlite = await best(() => smallUploads(join(ctx.tmp, `sqlite-${run++}`), undefined, files, 8));
      ctx.log(`small uploads sqlite: ${sqlite.toFixed(0)}/s`);
      const postgres = await best(async () => {
        await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        return smallUploads(join(ctx.tmp, `pg-${run++}`), u.toString(), files, 8);
      });
      ctx.log(`small uploads postgres: ${postgres.toFixed(0)}/s`);
      rows.push([
        `${files} uploads of 4 KiB, files/s`,
        sqlite.toFixed(0),
        postgres.toFixed(0),
        `${(postgres / sqlite).toFixed(2)}x`,
      ]);
      summary.push(`scaleout: small uploads ${sqlite.toFixed(0)}/s SQLite, ${postgres.toFixed(0)}/s PostgreSQL`);

      const localDir = join(ctx.tmp, "local-blobs");
      mkdirSync(localDir, { recursive: true });
      const local = new LocalBlobStore(localDir);
      await local.init();
      const s3rver = await startS3rverProcess(["bench"]);
      const s3 = new S3BlobStore({ url: "s3://bench", endpoint: s3rver.endpoint, credentials: s3rver.credentials });
      try {
        await s3.init();
        const l = await blobThroughput(local, mib);
        const r = await blobThroughput(s3, mib);
        ctx.log(
          `blobs local: write ${l.write.toFixed(0)} read ${l.read.toFixed(0)} MB/s; s3 ${r.write.toFixed(0)}/${r.read.toFixed(0)}`,
        );
        rows.push([
          `blob write ${mib} MiB, MB/s`,
          l.write.toFixed(0),
          r.write.toFixed(0),
          `${(r.write / l.write).toFixed(2)}x`,
        ]);
        rows.push([
          `blob read ${mib} MiB, MB/s`,
          l.read.toFixed(0),
          r.read.toFixed(0),
          `${(r.read / l.read).toFixed(2)}x`,
        ]);
        summary.push(
          `scaleout: blobs write ${l.write.toFixed(0)} vs ${r.write.toFixed(0)} MB/s, read ${l.read.toFixed(0)} vs ${r.read.toFixed(0)} MB/s (local vs S3/s3rver)`,
        );
      } finally {
        await s3.close();
        await local.close();
        await s3rver.close();
      }
    } finally {
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
      await admin.end();
    }
    return {
      table: rows,
      notes: [
        `load before ${loadBefore}; best of ${ctx.runs}. PostgreSQL serialises write transactions per schema (advisory lock), as SQLite does with its one writer; each upload is one commit transaction plus the usage update.`,
        "s3rver stores objects as files on the same disk and is single-threaded JavaScript: the S3 column measures the backend's overhead (HTTP, multipart, ranged GETs), not a real object store's throughput.",
      ],
      summary,
    };
  },
};
