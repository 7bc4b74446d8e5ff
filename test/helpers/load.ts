// Many concurrent SFTP sessions, each uploading small files one after another, with ssh2's client (one process can
// hold hundreds of sessions, which OpenSSH's sftp cannot). Used by the load test and `npm run bench -- load`.
import { readFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import type { SFTPWrapper } from "ssh2";
import ssh2 from "ssh2";

export interface LoadOptions {
  port: number;
  /** User of session i. */
  user(i: number): string;
  privateKeyFile: string;
  sessions: number;
  uploadsPerSession: number;
  bytesPerUpload: number;
  /** Remote path of upload j of session i. */
  path(i: number, j: number): string;
  /** Source address of session i (a loopback address: all of 127/8 is loopback on Linux). */
  localAddress?(i: number): string;
  /** Sessions logging in at the same time (a login storm is another test). Default 16. */
  connectConcurrency?: number;
  timeoutMs?: number;
  /** Called once every upload has finished, before the sessions close (to sample the server while they are open). */
  beforeClose?(): void;
}

export interface LoadResult {
  uploads: number;
  errors: number;
  /** First few distinct error messages. */
  errorMessages: string[];
  /** Per-upload latency (OPEN to CLOSE's reply), ms, sorted ascending. */
  latencies: number[];
  /** Wall time of the upload phase (all sessions logged in), ms. */
  uploadMs: number;
  connectMs: number;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

function login(o: LoadOptions, i: number, privateKey: Buffer): Promise<{ client: ssh2.Client; sftp: SFTPWrapper }> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    const timer = setTimeout(() => {
      client.destroy();
      reject(new Error(`session ${i}: login timed out`));
    }, o.timeoutMs ?? 120_000);
    client.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    client.on("ready", () =>
      client.sftp((err, sftp) => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve({ client, sftp });
      }),
    );
    const sock = tcpConnect({ port: o.port, host: "127.0.0.1", localAddress: o.localAddress?.(i), noDelay: true });
    client.connect({ sock, username: o.user(i), privateKey, readyTimeout: o.timeoutMs ?? 120_000 });
  });
}

function upload(sftp: SFTPWrapper, path: string, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    sftp.open(path, "w", (err, h) => {
      if (err) return reject(err);
      sftp.write(h, data, 0, data.length, 0, (werr) => {
        sftp.close(h, (cerr) => {
          const e = werr ?? cerr;
          if (e) reject(e);
          else resolve();
        });
      });
    });
  });
}

/** Logs every session in (a few at a time), then runs all uploads concurrently; never throws for upload errors. */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const privateKey = readFileSync(o.privateKeyFile);
  const data = Buffer.alloc(o.bytesPerUpload, 0x61);
  const sessions: { client: ssh2.Client; sftp: SFTPWrapper }[] = [];
  const t0 = performance.now();
  const pending = Array.from({ length: o.sessions }, (_, i) => i);
  try {
    await Promise.all(
      Array.from({ length: o.connectConcurrency ?? 16 }, async () => {
        for (let i = pending.shift(); i !== undefined; i = pending.shift()) sessions[i] = await login(o, i, privateKey);
      }),
    );
    const connectMs = performance.now() - t0;
    const latencies: number[] = [];
    const messages = new Map<string, number>();
    let errors = 0;
    const t1 = performance.now();
    await Promise.all(
      sessions.map(async ({ sftp }, i) => {
        for (let j = 0; j < o.uploadsPerSession; j++) {
          const start = performance.now();
          try {
            await upload(sftp, o.path(i, j), data);
            latencies.push(performance.now() - start);
          } catch (err) {
            errors++;
            const m = (err as Error).message;
            messages.set(m, (messages.get(m) ?? 0) + 1);
          }
        }
      }),
    );
    const uploadMs = performance.now() - t1;
    o.beforeClose?.();
    latencies.sort((a, b) => a - b);
    return {
      uploads: latencies.length,
      errors,
      errorMessages: [...messages].slice(0, 5).map(([m, n]) => `${n}x ${m}`),
      latencies,
      uploadMs,
      connectMs,
    };
  } finally {
    for (const s of sessions) s?.client.end();
  }
}
