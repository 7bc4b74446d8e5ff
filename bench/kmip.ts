// KMIP throughput over mutual TLS: `atrest kms serve --kmip-port` (dev key file, KMS audit log on) against Debian's
// `pykmip-server` (sqlite database, the same server certificate and CA) in the same run. The load generator is this
// process speaking TTLV itself (src/kms/kmip/ttlv.ts) with PyKMIP-shaped requests: KMIP 1.2 header, one batch item,
// Encrypt with Cryptographic Parameters {AES, GCM, Random IV, tag 16} on 64-byte data, and Get of a 256-bit AES key.
// Closed loop: each connection sends a request and waits for its answer.
import { readFileSync, writeFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { connect, type TLSSocket } from "node:tls";
import { freePort, spawnTracked, stop, waitForLine } from "./lib/proc.ts";
import type { BenchContext, BenchModule, BenchSection } from "./lib/types.ts";

interface Result {
  server: string;
  workload: string;
  connections: number;
  ops: number;
  seconds: number;
  p50: number;
  p99: number;
  cpuUs: number;
}

function cpuSeconds(pid: number | undefined): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

export const kmip: BenchModule = {
  name: "kmip",
  title: "KMIP: Encrypt and Get per second over mutual TLS, against PyKMIP's server",
  method: [
    "**KMIP**: `atrest kms serve --kmip-port` (dev key file, KMS audit log on) and Debian's `pykmip-server` 0.10 " +
      "(sqlite database, TLS 1.2 auth suite, the same server certificate and CA) on loopback, each measured in the " +
      "same run. The load generator is the bench process speaking TTLV (src/kms/kmip/ttlv.ts) over mutual TLS with " +
      "PyKMIP-shaped requests: a KMIP 1.2 header, one batch item, Encrypt of 64 bytes with Cryptographic Parameters " +
      "{AES, GCM, Random IV, tag 16}, and Get of a 256-bit AES key. Closed loop over N connections; latency per " +
      "request; server CPU µs/op from /proc/PID/stat.",
  ],
  async run(ctx: BenchContext): Promise<BenchSection> {
    const { initKmsDir, issueClient } = await import("../src/kms/home.ts");
    const t = await import("../src/kms/kmip/ttlv.ts");
    const { T, Operation, ObjectType, CryptographicAlgorithm, BlockCipherMode } = await import(
      "../src/kms/kmip/tags.ts"
    );
    const dir = join(ctx.tmp, "kms");
    await initKmsDir(dir, { dev: true });
    const certDir = join(ctx.tmp, "client");
    await issueClient(dir, "bench-kmip", "server", certDir);
    const [key, cert, ca] = ["client.key", "client.crt", "ca.crt"].map((f) => readFileSync(join(certDir, f)));

    const message = (op: number, ...payload: ReturnType<typeof t.struct>[]) =>
      t.encodeTtlv(
        t.struct(
          T.RequestMessage,
          t.struct(
            T.RequestHeader,
            t.struct(T.ProtocolVersion, t.int(T.ProtocolVersionMajor, 1), t.int(T.ProtocolVersionMinor, 2)),
            t.int(T.BatchCount, 1),
          ),
          t.struct(T.BatchItem, t.enumv(T.Operation, op), t.struct(T.RequestPayload, ...payload)),
        ),
      );
    const attr = (name: string, v: ReturnType<typeof t.struct>) =>
      t.struct(T.Attribute, t.text(T.AttributeName, name), { ...v, tag: T.AttributeValue });
    const createMsg = message(
      Operation.Create,
      t.enumv(T.ObjectType, ObjectType.SymmetricKey),
      t.struct(
        T.TemplateAttribute,
        attr("Cryptographic Algorithm", t.enumv(0, CryptographicAlgorithm.Aes)),
        attr("Cryptographic Length", t.int(0, 256)),
        attr("Cryptographic Usage Mask", t.int(0, 4 | 8)),
      ),
    );

    class Conn {
      readonly socket: TLSSocket;
      #buf: Buffer = Buffer.alloc(0);
      #waiter: ((b: Buffer) => void) | undefined;
      constructor(socket: TLSSocket) {
        this.socket = socket;
        socket.on("data", (c: Buffer) => {
          this.#buf = this.#buf.length ? Buffer.concat([this.#buf, c]) : c;
          if (this.#buf.length >= 8 && this.#buf.length >= 8 + this.#buf.readUInt32BE(4) && this.#waiter) {
            const n = 8 + this.#buf.readUInt32BE(4);
            const msg = this.#buf.subarray(0, n);
            this.#buf = this.#buf.subarray(n);
            const w = this.#waiter;
            this.#waiter = undefined;
            w(msg);
          }
        });
      }
      static open(port: number): Promise<Conn> {
        return new Promise((resolve, reject) => {
          const s = connect({ host: "127.0.0.1", port, key, cert, ca, checkServerIdentity: () => undefined });
          s.once("secureConnect", () => resolve(new Conn(s)));
          s.once("error", reject);
        });
      }
      call(msg: Buffer): Promise<ReturnType<typeof t.decodeTtlv>> {
        return new Promise((resolve) => {
          this.#waiter = (b) => resolve(t.decodeTtlv(b));
          this.socket.write(msg);
        });
      }
    }
    const payloadOf = (resp: ReturnType<typeof t.decodeTtlv>, what: string) => {
      const item = new t.Fields(resp).structs(T.BatchItem)[0] as InstanceType<typeof t.Fields>;
      const status = item.one(T.ResultStatus, "enumeration");
      if (status !== 0) throw new Error(`${what}: ${item.opt(T.ResultMessage, "text") ?? `status ${status}`}`);
      return item.struct(T.ResponsePayload) as InstanceType<typeof t.Fields>;
    };

    const seconds = ctx.quick ? 1.5 : 4;
    const connections = 4;
    const results: Result[] = [];

    const measure = async (server: string, port: number, pid: number | undefined) => {
      const first = await Conn.open(port);
      const uid = payloadOf(await first.call(createMsg), "create").one(T.UniqueIdentifier, "text");
      payloadOf(await first.call(message(Operation.Activate, t.text(T.UniqueIdentifier, uid))), "activate");
      first.socket.destroy();
      const data = Buffer.alloc(64, 7);
      const encryptMsg = message(
        Operation.Encrypt,
        t.text(T.UniqueIdentifier, uid),
        t.struct(
          T.CryptographicParameters,
          t.enumv(T.BlockCipherMode, BlockCipherMode.Gcm),
          t.enumv(T.CryptographicAlgorithm, CryptographicAlgorithm.Aes),
          t.bool(T.RandomIv, true),
          t.int(T.TagLength, 16),
        ),
        t.bytes(T.Data, data),
      );
      const getMsg = message(Operation.Get, t.text(T.UniqueIdentifier, uid));
      for (const [workload, msg] of [
        ["Encrypt (64 B, AES-GCM)", encryptMsg],
        ["Get (AES-256 key)", getMsg],
      ] as const) {
        const conns = await Promise.all(Array.from({ length: connections }, () => Conn.open(port)));
        payloadOf(await (conns[0] as Conn).call(msg), workload); // warm and check the answer
        const lat: number[] = [];
        const cpu0 = cpuSeconds(pid);
        const t0 = performance.now();
        const end = t0 + seconds * 1000;
        await Promise.all(
          conns.map(async (c) => {
            while (performance.now() < end) {
              const s = performance.now();
              const r = await c.call(msg);
              lat.push(performance.now() - s);
              payloadOf(r, workload);
            }
          }),
        );
        const elapsed = (performance.now() - t0) / 1000;
        const cpu = cpuSeconds(pid) - cpu0;
        for (const c of conns) c.socket.destroy();
        lat.sort((a, b) => a - b);
        const r: Result = {
          server,
          workload,
          connections,
          ops: lat.length,
          seconds: elapsed,
          p50: lat[Math.floor(lat.length * 0.5)] ?? Number.NaN,
          p99: lat[Math.min(lat.length - 1, Math.floor(lat.length * 0.99))] ?? Number.NaN,
          cpuUs: (cpu / lat.length) * 1e6,
        };
        ctx.log(
          `${server} ${workload}: ${(r.ops / r.seconds).toFixed(0)} ops/s p50 ${r.p50.toFixed(2)} ms p99 ${r.p99.toFixed(2)} ms, server ${r.cpuUs.toFixed(0)} µs CPU/op (load ${loadavg()[0].toFixed(2)})`,
        );
        results.push(r);
      }
    };

    const load0 = loadavg()[0];
    // atrest
    const port = await freePort();
    const kmipPort = await freePort();
    const cli = join(ctx.root, "src", "cli", "main.ts");
    const child = spawnTracked(process.execPath, [
      cli,
      "kms",
      "serve",
      "--data",
      dir,
      "--port",
      String(port),
      "--kmip-port",
      String(kmipPort),
      "--log-level",
      "warn",
    ]);
    try {
      await waitForLine(child, /kms KMIP listening/);
      await measure("atrest", kmipPort, child.pid);
    } finally {
      await stop(child);
    }
    // PyKMIP's server on the same certificate and CA.
    const peerDir = join(ctx.tmp, "pykmip");
    await mkdir(join(peerDir, "policies"), { recursive: true });
    const peerPort = await freePort();
    const conf = join(peerDir, "server.conf");
    writeFileSync(
      conf,
      [
        "[server]",
        "hostname=127.0.0.1",
        `port=${peerPort}`,
        `certificate_path=${join(dir, "server.crt")}`,
        `key_path=${join(dir, "server.key")}`,
        `ca_path=${join(dir, "ca.crt")}`,
        "auth_suite=TLS1.2",
        `policy_path=${join(peerDir, "policies")}`,
        "enable_tls_client_auth=True",
        "logging_level=WARNING",
        `database_path=${join(peerDir, "pykmip.db")}`,
        "",
      ].join("\n"),
    );
    const peer = spawnTracked("pykmip-server", ["-f", conf, "-l", join(peerDir, "server.log")]);
    let peerNote = "";
    try {
      const deadline = Date.now() + 20_000;
      for (;;) {
        try {
          (await Conn.open(peerPort)).socket.destroy();
          break;
        } catch (e) {
          if (Date.now() > deadline) throw e;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      await measure("pykmip-server", peerPort, peer.pid);
    } catch (e) {
      peerNote = `pykmip-server could not be measured: ${(e as Error).message}`;
      ctx.log(peerNote);
    } finally {
      await stop(peer);
    }
    const load1 = loadavg()[0];

    const rate = (r: Result) => r.ops / r.seconds;
    const table: string[][] = [
      ["server", "workload", "conns", "ops/s", "p50 ms", "p99 ms", "server CPU µs/op", "ratio atrest/peer"],
    ];
    const summary: string[] = [];
    for (const r of results) {
      const peerR = results.find((x) => x.server === "pykmip-server" && x.workload === r.workload);
      const ratio = r.server === "atrest" && peerR ? `${(rate(r) / rate(peerR)).toFixed(1)}x` : "";
      table.push([
        r.server,
        r.workload,
        String(r.connections),
        rate(r).toFixed(0),
        r.p50.toFixed(2),
        r.p99.toFixed(2),
        r.cpuUs.toFixed(0),
        ratio,
      ]);
      if (ratio) summary.push(`kmip ${r.workload}: ${rate(r).toFixed(0)} ops/s, ${ratio} pykmip-server`);
    }
    const notes = [`load average (1 min) ${load0.toFixed(2)} at the start, ${load1.toFixed(2)} at the end`];
    if (peerNote) notes.push(peerNote);
    return { table, notes, summary };
  },
};
