// Hostile or broken input, limits and lifecycle: the server keeps serving everyone else.
// Every wait here is bounded (see fixture.ts): a test that waits forever leaks its server and hangs the test run.
import assert from "node:assert/strict";
import { connect as tcpConnect } from "node:net";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { SFTPWrapper } from "ssh2";
import { runSftpBatch } from "../../helpers/sftp-clients.ts";
import { connect, type Fixture, startFixture, waitFor, within } from "./fixture.ts";

function call<T = unknown>(fn: (cb: (err: Error | null | undefined, v?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v as T))));
}

async function stillServes(f: Fixture): Promise<void> {
  const r = await runSftpBatch({
    port: f.port,
    user: "alice",
    keyFile: f.keyFile,
    commands: ["pwd"],
    timeoutMs: 30_000,
  });
  assert.equal(r.code, 0, r.stderr);
}

/** Raw bytes to the port; resolves when the server closes the connection. */
function rawSession(port: number, chunks: Buffer[], endAfter = false): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tcpConnect(port, "127.0.0.1");
    let got = "";
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error("server did not close the connection within 10 s"));
    }, 10_000);
    s.on("data", (d) => {
      got += d.toString("latin1");
    });
    s.on("error", () => {});
    s.on("close", () => {
      clearTimeout(timer);
      resolve(got);
    });
    s.on("connect", () => {
      for (const c of chunks) s.write(c);
      if (endAfter) s.end();
    });
  });
}

test("garbage on the port, truncated SSH packets: connection dropped, server fine", async () => {
  const f = await startFixture();
  try {
    await rawSession(f.port, [Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Buffer.alloc(70_000, 0xff)]);
    // A valid identification followed by half a binary packet, then EOF.
    await rawSession(f.port, [Buffer.from("SSH-2.0-evil\r\n"), Buffer.from([0, 0, 1, 0, 7, 20, 1, 2])], true);
    await stillServes(f);
  } finally {
    await f.close();
  }
});

test("bad SFTP framing ends that channel only; a truncated request gets BAD_MESSAGE", async () => {
  const f = await startFixture();
  try {
    const { client } = await connect(f);
    const reply = await within(
      new Promise<Buffer>((resolve, reject) => {
        client.subsys("sftp", (err, stream) => {
          if (err) return reject(err);
          let buf = Buffer.alloc(0);
          stream.on("close", () => reject(new Error("channel closed before the STATUS reply")));
          stream.on("data", (d: Buffer) => {
            buf = Buffer.concat([buf, d]);
            // VERSION, then the STATUS for request 7.
            if (buf.length >= 9 && buf.length >= 4 + buf.readUInt32BE(0) + 4) {
              const second = buf.subarray(4 + buf.readUInt32BE(0));
              if (second.length >= 4 + second.readUInt32BE(0)) resolve(second);
            }
          });
          const init = Buffer.from([0, 0, 0, 5, 1, 0, 0, 0, 3]);
          // OPEN id=7 whose filename claims 100 bytes that are not there.
          const open = Buffer.from([0, 0, 0, 9, 3, 0, 0, 0, 7, 0, 0, 0, 100]);
          stream.write(Buffer.concat([init, open]));
        });
      }),
      10_000,
      "the STATUS reply to a truncated OPEN",
    );
    assert.equal(reply[4], 101);
    assert.equal(reply.readUInt32BE(5), 7);
    assert.equal(reply.readUInt32BE(9), 5);
    const closed = await within(
      new Promise<boolean>((resolve) => {
        client.subsys("sftp", (err, stream) => {
          if (err) return resolve(false);
          stream.on("close", () => resolve(true));
          stream.resume();
          stream.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1]));
        });
      }),
      10_000,
      "the server to close a channel with a bad packet length",
    );
    assert.ok(closed);
    client.end();
    await stillServes(f);
  } finally {
    await f.close();
  }
});

test("max sessions: extra connections are refused cleanly", async () => {
  const f = await startFixture({ maxSessions: 2 });
  try {
    const a = await connect(f);
    const b = await connect(f);
    const r = await runSftpBatch({
      port: f.port,
      user: "alice",
      keyFile: f.keyFile,
      commands: ["pwd"],
      timeoutMs: 30_000,
    });
    assert.notEqual(r.code, 0);
    a.client.end();
    await within(a.closed, 10_000, "the first client's connection to close");
    await waitFor("a logout audit record", () => f.audit.some((e) => e.action === "logout"));
    await sleep(50);
    await stillServes(f);
    b.client.end();
  } finally {
    await f.close();
  }
});

test("idle timeout disconnects a silent client", async () => {
  const f = await startFixture({ idleTimeoutMs: 300 });
  try {
    const { closed } = await connect(f);
    await within(closed, 5000, "the idle timeout to disconnect the client");
    await stillServes(f);
  } finally {
    await f.close();
  }
});

async function openAndWrite(sftp: SFTPWrapper, path: string, bytes: number): Promise<Buffer> {
  const handle = await call<Buffer>((cb) => sftp.open(path, "w", cb));
  for (let off = 0; off < bytes; off += 32 * 1024) {
    const chunk = Buffer.alloc(Math.min(32 * 1024, bytes - off), off & 0xff);
    await call((cb) => sftp.write(handle, chunk, 0, chunk.length, off, cb));
  }
  return handle;
}

/** What openAndWrite writes, followed by `extra`. */
function written(bytes: number, extra = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(bytes);
  for (let off = 0; off < bytes; off += 32 * 1024) out.fill(off & 0xff, off, Math.min(off + 32 * 1024, bytes));
  return Buffer.concat([out, extra]);
}

test("client vanishing mid-upload: the partial is kept (resumable), handles released", async () => {
  const f = await startFixture();
  try {
    const { client, sftp } = await connect(f);
    await openAndWrite(sftp, "/partial.bin", 100 * 1024);
    assert.equal(f.accounts.openWrites("alice"), 1);
    (client as unknown as { _sock: { destroy(): void } })._sock.destroy();
    await waitFor("the upload to be aborted", () => f.accounts.openWrites("alice") === 0);
    assert.equal((await f.stat("/partial.bin")).size, 100 * 1024);
    assert.deepEqual(await f.readFile("/partial.bin"), written(100 * 1024));
    await waitFor("every vfs session to be closed", () => f.accounts.sessions.every((s) => s.closed));
    await stillServes(f);
  } finally {
    await f.close();
  }
});

test("close() lets a running upload finish, then ends; after the timeout it aborts keeping the partial", async () => {
  const f = await startFixture({ closeTimeoutMs: 5000 });
  try {
    const { client, sftp } = await connect(f);
    const handle = await openAndWrite(sftp, "/during-close.bin", 64 * 1024);
    let closed = false;
    const closing = f.stopServer().then(() => {
      closed = true;
    });
    await sleep(200);
    assert.equal(closed, false);
    const more = Buffer.alloc(1000, 1);
    await call((cb) => sftp.write(handle, more, 0, 1000, 64 * 1024, cb));
    await call((cb) => sftp.close(handle, cb));
    await within(closing, 10_000, "server.close() after the last upload finished");
    assert.equal((await f.stat("/during-close.bin")).size, 64 * 1024 + 1000);
    assert.deepEqual(await f.readFile("/during-close.bin"), written(64 * 1024, more));
    client.end();
  } finally {
    await f.close();
  }

  const g = await startFixture({ closeTimeoutMs: 300 });
  try {
    const c2 = await connect(g);
    await openAndWrite(c2.sftp, "/stuck.bin", 40 * 1024);
    const t0 = Date.now();
    await within(g.stopServer(), 10_000, "server.close() past its 300 ms timeout");
    assert.ok(Date.now() - t0 < 3000, `close took ${Date.now() - t0} ms`);
    assert.equal((await g.stat("/stuck.bin")).size, 40 * 1024);
    assert.deepEqual(await g.readFile("/stuck.bin"), written(40 * 1024));
    c2.client.end();
  } finally {
    await g.close();
  }
});
