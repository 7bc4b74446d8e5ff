// Pre-authentication limits (issue 11 item 5): silent sockets and connections that never finish their login cannot
// lock everyone out. Raw TCP sockets play the attacker; the real OpenSSH sftp client logs in beside them. Sources
// other than 127.0.0.1 are other loopback addresses (all of 127/8 is loopback on Linux).
import assert from "node:assert/strict";
import { type Socket, connect as tcpConnect } from "node:net";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { DEFAULT_LIMITS, dropStartup, parseMaxStartups } from "../../../src/protocols/sftp/limits.ts";
import { runSftpBatch } from "../../helpers/sftp-clients.ts";
import { type Fixture, startFixture, waitFor } from "./fixture.ts";

interface Silent {
  socket: Socket;
  closed: boolean;
  /** What the server sent before closing. */
  got: string;
}

/** `n` TCP connections from `from` that send nothing (or only `send`) and never log in. */
async function silent(port: number, n: number, from: string, send?: string): Promise<Silent[]> {
  const out: Silent[] = [];
  await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<void>((resolve) => {
          const socket = tcpConnect({ port, host: "127.0.0.1", localAddress: from });
          const s: Silent = { socket, closed: false, got: "" };
          out.push(s);
          socket.on("error", () => {});
          socket.on("data", (d) => {
            s.got += d.toString("latin1");
          });
          socket.on("close", () => {
            s.closed = true;
            resolve();
          });
          socket.on("connect", () => {
            if (send) socket.write(send);
            resolve();
          });
        }),
    ),
  );
  return out;
}

const open = (all: Silent[]) => all.filter((s) => !s.closed).length;

function login(f: Fixture, from: string) {
  return runSftpBatch({
    port: f.port,
    user: "alice",
    keyFile: f.keyFile,
    commands: ["pwd"],
    args: ["-o", `BindAddress=${from}`, "-o", "ConnectTimeout=10"],
    timeoutMs: 30_000,
  });
}

test("MaxStartups start:rate:full is parsed like OpenSSH's and drops as it does", () => {
  assert.deepEqual(parseMaxStartups("10:30:100"), { start: 10, rate: 30, full: 100 });
  assert.deepEqual(parseMaxStartups("20"), { start: 20, rate: 100, full: 20 });
  for (const bad of ["", "10:30", "a:b:c", "10:130:100", "50:30:10", "0:30:100"]) {
    assert.throws(() => parseMaxStartups(bad), /start/, bad);
  }
  const m = parseMaxStartups("10:30:100");
  assert.equal(
    dropStartup(m, 9, () => 0),
    false,
    "under start: never",
  );
  assert.equal(
    dropStartup(m, 100, () => 0.999),
    true,
    "at full: always",
  );
  // at start the drop chance is rate (30%); halfway to full it is 65%
  assert.equal(
    dropStartup(m, 10, () => 0.29),
    true,
  );
  assert.equal(
    dropStartup(m, 10, () => 0.31),
    false,
  );
  assert.equal(
    dropStartup(m, 55, () => 0.64),
    true,
  );
  assert.equal(
    dropStartup(m, 55, () => 0.66),
    false,
  );
});

test("300 silent sockets from one address: a real OpenSSH login from another still works; the grace time cuts them", async () => {
  const f = await startFixture({ limits: { loginGraceSeconds: 3 } });
  const all: Silent[] = [];
  try {
    const t0 = Date.now();
    all.push(...(await silent(f.port, 300, "127.0.0.1")));
    // beyond the per-source limit of unauthenticated connections (8) every one is dropped at once
    await waitFor("the excess dropped", () => open(all) <= DEFAULT_LIMITS.maxStartupsPerSource, 5_000);
    assert.equal(open(all), DEFAULT_LIMITS.maxStartupsPerSource, "the first 8 are held (they may still log in)");
    const r = await login(f, "127.0.0.2");
    assert.equal(r.code, 0, r.stderr);
    // the held ones never identify themselves: cut at the grace time
    await waitFor("the grace time to close the silent sockets", () => open(all) === 0, 8_000);
    const took = Date.now() - t0;
    assert.ok(took >= 2_900, `closed after ${took} ms, not before the grace time`);
    const again = await login(f, "127.0.0.1");
    assert.equal(again.code, 0, again.stderr);
  } finally {
    for (const s of all) s.socket.destroy();
    await f.close();
  }
});

test("a crowd from many addresses fills MaxStartups; it drops new ones, and the grace time frees the server", async () => {
  const f = await startFixture({ limits: { loginGraceSeconds: 3 } });
  const all: Silent[] = [];
  try {
    // 30 addresses x 8: at the per-source limit, together about twice MaxStartups' full (128)
    const t0 = Date.now();
    for (let i = 0; i < 30; i++) all.push(...(await silent(f.port, 8, `127.0.1.${i + 1}`)));
    // a loaded server may take a moment to accept (or drop) them all: wait until the count stops changing
    let held = open(all);
    for (let stable = 0; stable < 3; ) {
      await sleep(200);
      const now = open(all);
      stable = now === held ? stable + 1 : 0;
      held = now;
    }
    assert.ok(held <= DEFAULT_LIMITS.maxStartups.full, `${held} held, at most full`);
    assert.ok(held > DEFAULT_LIMITS.maxStartups.start, `${held} held, more than start (early drop is random)`);
    await waitFor("the grace time to close them", () => open(all) === 0, 8_000);
    assert.ok(Date.now() - t0 >= 2_900);
    const r = await login(f, "127.0.0.2");
    assert.equal(r.code, 0, r.stderr);
  } finally {
    for (const s of all) s.socket.destroy();
    await f.close();
  }
});

test("a client that sends its identification and stops is cut at the grace time too", async () => {
  const f = await startFixture({ limits: { loginGraceSeconds: 2 } });
  const all: Silent[] = [];
  try {
    const t0 = Date.now();
    all.push(...(await silent(f.port, 5, "127.0.0.3", "SSH-2.0-stalled\r\n")));
    await sleep(500);
    assert.equal(open(all), 5);
    assert.match(all[0].got, /^SSH-2\.0-atrest/, "the server answered the identification");
    await waitFor("the grace time", () => open(all) === 0, 6_000);
    assert.ok(Date.now() - t0 >= 1_900);
  } finally {
    for (const s of all) s.socket.destroy();
    await f.close();
  }
});

test("connections per source address are bounded, authenticated ones included; a message says why", async () => {
  const f = await startFixture({ limits: { maxConnectionsPerSource: 3, loginGraceSeconds: 5 } });
  const all: Silent[] = [];
  try {
    all.push(...(await silent(f.port, 3, "127.0.0.4")));
    const refused = await silent(f.port, 1, "127.0.0.4");
    await waitFor("the refusal", () => refused[0].closed, 5_000);
    assert.match(refused[0].got, /too many connections from your address/);
    const r = await login(f, "127.0.0.4");
    assert.notEqual(r.code, 0, "a fourth connection from the address is refused");
    const other = await login(f, "127.0.0.5");
    assert.equal(other.code, 0, other.stderr);
    for (const s of all) s.socket.destroy();
    await waitFor("the slots freed", () => open(all) === 0, 5_000);
    await sleep(100);
    const back = await login(f, "127.0.0.4");
    assert.equal(back.code, 0, back.stderr);
  } finally {
    for (const s of all) s.socket.destroy();
    await f.close();
  }
});
