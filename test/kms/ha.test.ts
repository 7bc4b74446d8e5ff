// Key manager high availability (issue 15, item 4): two `atrest kms serve` processes on one PostgreSQL schema, each
// unsealed by the custodians through `atrest kms unseal`; the file server's client (RemoteKms with both URLs) keeps
// working when one is killed with SIGKILL; the schedulers of both nodes race and still rotate and destroy once.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { rename, writeFile } from "node:fs/promises";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { RemoteKms } from "../../src/kms/api/client.ts";
import { cli, cliProcess, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { type RunningKms, startKms, unsealKms } from "../helpers/kms.ts";
import { dropTestSchemas, pgSkip, pgUrl, testSchema } from "../helpers/pg.ts";
import { makeClientKey, runSftpBatch, sha256File } from "../helpers/sftp-clients.ts";

const skip = await pgSkip();
const DAY = 86_400_000;

/** The scheduler's passes that changed something, from a node's info log: what they rotated and destroyed. */
function scheduled(out: string): { rotated: string[]; destroyed: string[]; failed: string[] } {
  const r = { rotated: [] as string[], destroyed: [] as string[], failed: [] as string[] };
  for (const line of out.split("\n")) {
    if (!line.startsWith("{")) continue;
    const rec = JSON.parse(line) as { msg?: string; rotated?: string[]; destroyed?: string[]; err?: unknown };
    if (rec.msg === "kms: scheduled changes") {
      r.rotated.push(...(rec.rotated ?? []));
      r.destroyed.push(...(rec.destroyed ?? []));
    }
    if (rec.msg === "kms: scheduled pass failed") r.failed.push(JSON.stringify(rec.err));
  }
  return r;
}

/** A TCP relay to PostgreSQL that the test can cut: one node's own path to the store. */
async function relay(): Promise<{ port: number; cut: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const target = new URL(pgUrl("x"));
  const server: Server = createServer((inbound) => {
    const out = createConnection({ host: target.hostname, port: Number(target.port || 5432) });
    for (const s of [inbound, out]) {
      sockets.add(s);
      s.on("error", () => undefined);
      s.on("close", () => sockets.delete(s));
    }
    inbound.pipe(out).pipe(inbound);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as { port: number }).port,
    cut: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

/** Moves the children's clock; atomically, as their schedulers read the file every 100 ms. */
async function setClock(file: string, at: Date): Promise<void> {
  await writeFile(`${file}.tmp`, at.toISOString());
  await rename(`${file}.tmp`, file);
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("KMS high availability: two kms serve nodes on one PostgreSQL store", skip, () => {
  let root: string;
  let dirA: string;
  let dirB: string;
  let store: string;
  let clock: string;
  let shares: string[] = [];
  const cert: Record<string, string> = {};
  let a: RunningKms | undefined;
  let b: RunningKms | undefined;
  let fsA: RemoteKms;
  let fsB: RemoteKms;
  let server: RunningServer | undefined;
  const env = { ...process.env };

  const as = (who: string, node: RunningKms) => ["--kms", node.url, "--kms-cert", cert[who] as string];
  const serve = (dir: string, port = 0) => startKms(dir, port, ["--log-level", "info", "--scheduler-interval", "100"]);
  async function unsealBoth(...nodes: RunningKms[]) {
    for (const n of nodes) {
      await unsealKms(n.url, cert.alice as string, [shares[0] as string]);
      assert.match(await unsealKms(n.url, cert.bob as string, [shares[1] as string]), /unsealed/);
    }
  }

  before(async () => {
    // The children's clock: the real time until the file exists (test/helpers/test-hooks.ts).
    root = await tempDir("atrest-kms-ha-");
    clock = join(root, "clock");
    process.env.ATREST_TEST_MODE = "1";
    process.env.ATREST_TEST_CLOCK_FILE = clock;
    dirA = join(root, "a");
    dirB = join(root, "b");
    store = pgUrl(testSchema());
    const init = await cli(["kms", "init", "--data", dirA, "--store", store, "--shares", "3", "--threshold", "2"]);
    shares = [...init.stdout.matchAll(/share \d+: ([0-9a-f]{8}-[0-9a-f]{66})/g)].map((m) => m[1] as string);
    assert.equal(shares.length, 3);
    for (const [name, role] of [
      ["fs1", "server"],
      ["olga", "operator"],
      ["alice", "custodian"],
      ["bob", "custodian"],
      ["adam", "admin"],
    ] as const) {
      cert[name] = join(root, "certs", name);
      await cli(["kms", "client", "issue", name, "--role", role, "--out", cert[name], "--data", dirA]);
    }
    const joined = await cli(["kms", "init", "--data", dirB, "--store", store, "--join", dirA]);
    assert.match(joined.stdout, /joined the KMS store \(shamir\)/);
    a = await serve(dirA);
    b = await serve(dirB);
    await unsealBoth(a, b);
    fsA = await RemoteKms.connect({ url: a.url, certDir: cert.fs1 as string });
    fsB = await RemoteKms.connect({ url: b.url, certDir: cert.fs1 as string });
  });

  after(async () => {
    await server?.stop();
    await fsA?.close();
    await fsB?.close();
    await a?.stop();
    await b?.stop();
    process.env.ATREST_TEST_MODE = env.ATREST_TEST_MODE;
    process.env.ATREST_TEST_CLOCK_FILE = env.ATREST_TEST_CLOCK_FILE;
    if (env.ATREST_TEST_MODE === undefined) delete process.env.ATREST_TEST_MODE;
    if (env.ATREST_TEST_CLOCK_FILE === undefined) delete process.env.ATREST_TEST_CLOCK_FILE;
    await dropTestSchemas();
    if (root) await removeDir(root);
  });

  test("init refuses a second master key on the store, and a join to an empty store", async () => {
    await assert.rejects(
      cli(["kms", "init", "--data", join(root, "c"), "--store", store, "--shares", "3", "--threshold", "2"]),
      /the store holds a KMS already: to add a node, kms init --store URL --join DIR/,
    );
    await assert.rejects(
      cli(["kms", "init", "--data", join(root, "d"), "--store", pgUrl(testSchema()), "--join", dirA]),
      /nothing to join: the store holds no KMS yet/,
    );
  });

  test("a key created on A wraps on A and unwraps on B; a certificate issued on A is accepted by B", async () => {
    assert.ok(a && b);
    await assert.rejects(
      cli(["kms", "unseal", "--kms", `${a.url},${b.url}`, "--cert", cert.alice as string], `${shares[0]}\n`),
      /give one KMS node's URL: each node is unsealed, sealed and reports its seal state on its own/,
    );
    await cli(["kms", "key", "create", "hr", ...as("olga", a)]);
    const ctx = { file: "1", owner: "alice" };
    const dk = await fsA.generateDataKey("hr", ctx);
    assert.deepEqual(await fsB.unwrap(dk.wrapped, ctx), dk.plaintext);
    const back = await fsB.generateDataKey("hr", ctx);
    assert.deepEqual(await fsA.unwrap(back.wrapped, ctx), back.plaintext);
  });

  test("a certificate revoked on B's directory is refused by A within a second", async () => {
    assert.ok(a && b);
    const dir = join(root, "certs", "fs2");
    await cli(["kms", "client", "issue", "fs2", "--role", "server", "--out", dir, "--data", dirB]);
    const fs2 = await RemoteKms.connect({ url: a.url, certDir: dir });
    try {
      await until("A to accept fs2", async () => (await fs2.generateDataKey("default", {})) && true, 1000);
      await cli(["kms", "client", "revoke", "fs2", "--data", dirB]);
      const t0 = performance.now();
      await until(
        "A to refuse fs2",
        () =>
          fs2.generateDataKey("default", {}).then(
            () => undefined,
            (e: Error) => e.message,
          ),
        1000,
      );
      assert.ok(performance.now() - t0 < 1000);
    } finally {
      await fs2.close();
    }
  });

  test("rotate on A: B wraps under the new version within 1 s", async () => {
    assert.ok(a && b);
    const ctx = { file: "2" };
    const before = (await fsB.generateDataKey("hr", ctx)).keyRef;
    assert.equal(before, "kek:hr:v1");
    await cli(["kms", "key", "rotate", "hr", ...as("olga", a)]);
    const t0 = performance.now();
    await until("B to wrap under v2", async () => {
      const dk = await fsB.generateDataKey("hr", ctx);
      return dk.keyRef === "kek:hr:v2" ? dk : undefined;
    });
    const ms = performance.now() - t0;
    process.stdout.write(`# B wrapped under the version rotated on A after ${ms.toFixed(0)} ms\n`);
    assert.ok(ms < 1000, `B took ${ms} ms to see the rotation`);
  });

  test("a dual-control destroy asked on A is approved on B; both schedulers race: destroyed once", async () => {
    assert.ok(a && b);
    await cli(["kms", "key", "create", "tmp", ...as("olga", a)]);
    const ctx = { file: "3" };
    const dk = await fsA.generateDataKey("tmp", ctx);
    const asked = await cli(["kms", "key", "destroy", "tmp", "--waiting-days", "7", "--reason", "x", ...as("olga", a)]);
    const id = /request (req-[0-9a-f]+)/.exec(asked.stdout)?.[1] as string;
    assert.ok(id, asked.stdout);
    assert.match((await cli(["kms", "approve", id, ...as("alice", b)])).stdout, /needs 1 more/);
    assert.match((await cli(["kms", "approve", id, ...as("bob", b)])).stdout, /executed: destruction scheduled/);
    // A's cache learns of B's commit within its refresh period (NOTIFY, then at most 100 ms).
    await until(
      "A to see the destruction B scheduled",
      async () => {
        const shown = JSON.parse(
          (await cli(["kms", "key", "show", "tmp", "--json", ...as("olga", a as RunningKms)])).stdout,
        );
        return shown.versions[0].destroyAt ? true : undefined;
      },
      1000,
    );
    assert.deepEqual(await fsB.unwrap(dk.wrapped, ctx), dk.plaintext); // waiting period
    await setClock(clock, new Date(Date.now() + 8 * DAY));
    await until("the destruction", async () => {
      await fsB.unwrap(dk.wrapped, ctx).then(
        () => {
          throw new Error("still there");
        },
        () => undefined,
      );
      return true;
    });
    // Refused on A too: "destroyed" once its cache refreshed, "no key material" if it still held the row.
    await assert.rejects(fsA.unwrap(dk.wrapped, ctx), /destroyed|no key material/);
    await new Promise((r) => setTimeout(r, 500)); // more passes on both nodes
    const runs = [scheduled(a.output()), scheduled(b.output())];
    assert.deepEqual(
      runs.flatMap((r) => r.destroyed),
      ["kek:tmp:v1"],
    );
    assert.deepEqual(
      runs.flatMap((r) => r.failed),
      [],
    );
  });

  test("two custodians approve one request on two nodes at the same moment: executed once", async () => {
    assert.ok(a && b);
    await cli(["kms", "key", "create", "race", ...as("olga", a)]);
    const asked = await cli([
      "kms",
      "key",
      "destroy",
      "race",
      "--waiting-days",
      "7",
      "--reason",
      "x",
      ...as("olga", b),
    ]);
    const id = /request (req-[0-9a-f]+)/.exec(asked.stdout)?.[1] as string;
    const outs = await Promise.all([
      cliProcess(["kms", "approve", id, ...as("alice", a)]),
      cliProcess(["kms", "approve", id, ...as("bob", b)]),
    ]);
    const said = outs.map((o) => o.stdout);
    assert.equal(said.filter((o) => /executed: destruction scheduled/.test(o)).length, 1, said.join("\n"));
    assert.equal(said.filter((o) => /needs 1 more/.test(o)).length, 1, said.join("\n"));
    const req = JSON.parse((await cli(["kms", "request", "show", id, "--json", ...as("alice", b)])).stdout);
    assert.equal(req.status, "executed");
    assert.equal(req.approvals.length, 2);
  });

  test("an automatic rotation falls due: both schedulers race, it happens once", async () => {
    assert.ok(a && b);
    await cli(["kms", "key", "create", "auto", "--rotation", "auto", "--rotation-days", "30", ...as("olga", a)]);
    await setClock(clock, new Date(Date.now() + 40 * DAY));
    await until("the rotation", async () => {
      const dk = await fsB.generateDataKey("auto", {});
      return dk.keyRef === "kek:auto:v2" ? true : undefined;
    });
    await new Promise((r) => setTimeout(r, 500));
    const runs = [scheduled(a.output()), scheduled(b.output())];
    assert.deepEqual(
      runs.flatMap((r) => r.rotated).filter((ref) => ref.startsWith("kek:auto")),
      ["kek:auto:v2"],
    );
    const info = JSON.parse((await cli(["kms", "key", "show", "auto", "--json", ...as("olga", b)])).stdout);
    assert.equal(info.versions.length, 2);
  });

  test("kill -9 A under a stream of unwraps: every call succeeds through B, the switch takes < 2 s", async () => {
    assert.ok(a && b);
    const both = await RemoteKms.connect({ url: `${a.url},${b.url}`, certDir: cert.fs1 as string });
    try {
      const ctx = { file: "4" };
      const keys = await Promise.all(Array.from({ length: 8 }, () => both.generateDataKey("hr", ctx)));
      assert.equal(both.active.url, a.url);
      let failed = 0;
      let done = 0;
      let slowest = 0;
      let killedAt = 0;
      let firstOnB = 0;
      let stop = false;
      // Four concurrent streams, as several uploads would be; each call is timed.
      const stream = async (i: number) => {
        while (!stop) {
          const k = keys[(done + i) % keys.length] as (typeof keys)[number];
          const t = performance.now();
          try {
            assert.deepEqual(await both.unwrap(k.wrapped, ctx), k.plaintext);
            if (i === 0) await both.generateDataKey("hr", ctx);
            done++;
          } catch {
            failed++;
          }
          const end = performance.now();
          slowest = Math.max(slowest, end - t);
          if (killedAt && !firstOnB && both.active.url === b?.url) firstOnB = end;
        }
      };
      const streams = [0, 1, 2, 3].map(stream);
      await new Promise((r) => setTimeout(r, 300));
      const before = done;
      killedAt = performance.now();
      await a.kill();
      await new Promise((r) => setTimeout(r, 1500));
      stop = true;
      await Promise.all(streams);
      const switchMs = firstOnB - killedAt;
      process.stdout.write(
        `# kill -9 of node A: ${done} calls (${before} before the kill), ${failed} failed, ` +
          `first answer from B ${switchMs.toFixed(0)} ms after the kill, slowest call ${slowest.toFixed(0)} ms\n`,
      );
      assert.equal(failed, 0);
      assert.ok(done > before, "calls went on after the kill");
      assert.ok(firstOnB > 0 && switchMs < 2000, `switch took ${switchMs} ms`);
      assert.equal(both.active.url, b.url);
    } finally {
      await both.close();
    }
  });

  test("a node that loses its path to PostgreSQL answers 503 and the client carries on through another node", async () => {
    assert.ok(b);
    const r = await relay();
    const viaRelay = new URL(store);
    viaRelay.port = String(r.port);
    const dirC = join(root, "c-node");
    // In a process of its own: the relay runs on this process's event loop, which an in-process store call blocks.
    await cliProcess(["kms", "init", "--data", dirC, "--store", viaRelay.toString(), "--join", dirA]);
    let c: RunningKms | undefined;
    try {
      c = await serve(dirC);
      await unsealBoth(c);
      const both = await RemoteKms.connect({ url: `${c.url},${b.url}`, certDir: cert.fs1 as string });
      try {
        const ctx = { file: "6" };
        const dk = await both.generateDataKey("hr", ctx);
        assert.equal(both.active.url, c.url);
        await r.cut();
        // C serves from its cache until it notices the store is gone (its listener drops: at most ~0.4 s), then
        // answers 503 and the client moves to B. Not one call fails meanwhile.
        const t0 = performance.now();
        let calls = 0;
        let movedAt = 0;
        while (performance.now() - t0 < 1500) {
          assert.deepEqual(await both.unwrap(dk.wrapped, ctx), dk.plaintext);
          await both.generateDataKey("hr", ctx);
          calls += 2;
          if (!movedAt && both.active.url === b.url) movedAt = performance.now() - t0;
        }
        process.stdout.write(
          `# store cut under node C: ${calls} calls, none failed, on B after ${movedAt.toFixed(0)} ms\n`,
        );
        assert.equal(both.active.url, b.url);
        const onC = await RemoteKms.connect({ url: c.url, certDir: cert.fs1 as string });
        try {
          await assert.rejects(onC.generateDataKey("hr", ctx), /store \(PostgreSQL\) is unavailable|did not answer/);
        } finally {
          await onC.close();
        }
      } finally {
        await both.close();
      }
    } finally {
      await r.cut();
      await c?.stop();
    }
  });

  test("A restarted and unsealed is consistent with what B did meanwhile", async () => {
    assert.ok(b && a);
    await cli(["kms", "key", "create", "while-a-was-down", ...as("olga", b)]);
    await cli(["kms", "key", "rotate", "hr", ...as("olga", b)]);
    const ctx = { file: "5" };
    const dk = await fsB.generateDataKey("while-a-was-down", ctx);
    a = await serve(dirA, a.port);
    await unsealBoth(a);
    assert.deepEqual(await fsA.unwrap(dk.wrapped, ctx), dk.plaintext);
    assert.equal((await fsA.generateDataKey("hr", ctx)).keyRef, "kek:hr:v3");
    const onA = JSON.parse((await cli(["kms", "key", "list", "--json", ...as("olga", a)])).stdout);
    const onB = JSON.parse((await cli(["kms", "key", "list", "--json", ...as("olga", b)])).stdout);
    assert.deepEqual(onA, onB);
  });

  test("master rotation through A: B seals itself (never seals under the old master), unsealed again it serves", async () => {
    assert.ok(a && b);
    const both = await RemoteKms.connect({ url: `${b.url},${a.url}`, certDir: cert.fs1 as string });
    try {
      const ctx = { file: "7" };
      const dk = await both.generateDataKey("hr", ctx);
      assert.equal(both.active.url, b.url);
      const asked = await cli(["kms", "rotate-master", "--reason", "annual", ...as("adam", a)]);
      const id = /request (req-[0-9a-f]+)/.exec(asked.stdout)?.[1] as string;
      assert.ok(id, asked.stdout);
      await cli(["kms", "approve", id, ...as("alice", a)]);
      assert.match((await cli(["kms", "approve", id, ...as("bob", a)])).stdout, /executed/);
      // B learns of it at its next look at the store, answers 503 and seals; the client carries on through A.
      const t0 = performance.now();
      while (performance.now() - t0 < 1000) assert.deepEqual(await both.unwrap(dk.wrapped, ctx), dk.plaintext);
      assert.equal(both.active.url, a.url);
      const st = await cli(["kms", "status", "--kms", b.url, "--cert", cert.alice as string]);
      assert.match(st.stdout, /sealed: 0\/2/);
      assert.match(b.output(), /master key was rotated through another node: sealing/);
      await unsealBoth(b);
      assert.deepEqual(await fsB.unwrap(dk.wrapped, ctx), dk.plaintext);
      await cli(["kms", "key", "create", "after-rotation", ...as("olga", b)]);
      const fresh = await fsB.generateDataKey("after-rotation", ctx);
      assert.deepEqual(await fsA.unwrap(fresh.wrapped, ctx), fresh.plaintext);
    } finally {
      await both.close();
    }
  });

  test("SFTP uploads through a file server on --kms A,B go on across kill -9 of A: every file stored and intact", async () => {
    assert.ok(a && b);
    const data = join(root, "data");
    const key = await makeClientKey(root);
    await cli(["init", "--data", data, "--kms", `${a.url},${b.url}`, "--kms-cert", cert.fs1 as string]);
    await cli(["user", "add", "alice", "--public-key", `${key}.pub`, "--data", data]);
    // the list both recorded by init and given to the server (flag and config take it as one comma-separated value)
    server = await startServer(data, ["--kms", `${a.url},${b.url}`, "--kms-cert", cert.fs1 as string]);
    const local = join(root, "up");
    const names = Array.from({ length: 60 }, (_, i) => `f${i}.bin`);
    const sums = new Map<string, string>();
    await cli(["kms", "key", "list", ...as("olga", a)]); // A answers before the uploads start
    const { mkdir } = await import("node:fs/promises");
    await mkdir(local, { recursive: true });
    for (const n of names) {
      await writeFile(join(local, n), randomBytes(48 * 1024));
      sums.set(n, await sha256File(join(local, n)));
    }
    let finished = false;
    const upload = runSftpBatch({
      port: server.port,
      user: "alice",
      keyFile: key,
      commands: names.map((n) => `put ${join(local, n)} ${n}`),
      timeoutMs: 120_000,
    }).finally(() => {
      finished = true;
    });
    await new Promise((r) => setTimeout(r, 400));
    const inFlight = !finished;
    await a.kill();
    const r = await upload;
    assert.equal(r.code, 0, r.stderr);
    assert.ok(inFlight, "the uploads were still running when A was killed");
    const back = join(root, "back");
    await mkdir(back, { recursive: true });
    const got = await runSftpBatch({
      port: server.port,
      user: "alice",
      keyFile: key,
      commands: names.map((n) => `get ${n} ${join(back, n)}`),
      timeoutMs: 120_000,
    });
    assert.equal(got.code, 0, got.stderr);
    for (const n of names) assert.equal(await sha256File(join(back, n)), sums.get(n), n);
  });
});
