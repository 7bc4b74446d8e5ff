// Every node's SFTP/S3 connections through the store (service/live-sessions.ts), with the real sealing the server uses
// (SealedCookies under a shared key) over a settings table kept in a Map, and a clock the test moves: a node's list
// is published when it changes and at each heartbeat, read by the others with the node's name, gone at a clean stop;
// a dead node's row (not rewritten past its expiry) and a row sealed under another key are deleted by the next reader;
// an admin ending a user's sessions through one node ends that user's older connections on the others.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import { SealedCookies } from "../../src/protocols/http/sealed-cookie.ts";
import { LiveSessionBoard, type LiveSessionRows, STALE_MS } from "../../src/service/live-sessions.ts";
import type { LiveSession } from "../../src/service/login.ts";

function memoryRows(): LiveSessionRows & { map: Map<string, Buffer>; writes: number } {
  const map = new Map<string, Buffer>();
  const rows = {
    map,
    writes: 0,
    setSetting: async (k: string, v: Buffer) => {
      rows.writes++;
      map.set(k, v);
    },
    deleteSetting: async (k: string) => map.delete(k),
    listSettings: async (prefix: string) =>
      [...map].filter(([k]) => k.startsWith(prefix)).map(([key, value]) => ({ key, value })),
  };
  return rows;
}

describe("live sessions of every node, through the store", () => {
  const key = randomBytes(32);
  let now = Date.parse("2026-12-07T12:00:00Z");
  const clock = () => now;
  const rows = memoryRows();
  const live: Record<string, LiveSession[]> = { a: [], b: [] };
  const ended: [string, string, number][] = [];
  const board = (node: string, k = key) =>
    new LiveSessionBoard({
      rows,
      sealer: new SealedCookies(Buffer.from(k)),
      node,
      sessions: () => live[node] ?? [],
      end: (user, before) => {
        ended.push([node, user, before]);
        live[node] = (live[node] ?? []).filter((s) => s.user !== user || s.since > before);
      },
      onError: (err) => assert.fail(String(err)),
      now: clock,
    });
  const a = board("a");
  const b = board("b");
  const sam: LiveSession = { sessionId: "s-1", user: "sam", protocol: "sftp", sourceIp: "10.0.0.7", since: now };

  test("a node's connections are listed by another with its name; its own as they are now", async () => {
    live.a = [sam];
    await a.publish();
    live.b = [{ sessionId: "s-2", user: "tom", protocol: "s3", since: now }];
    const seen = await b.list();
    assert.deepEqual(
      seen.map((s) => [s.node, s.user, s.protocol, s.sourceIp]),
      [
        ["b", "tom", "s3", undefined],
        ["a", "sam", "sftp", "10.0.0.7"],
      ],
    );
    // sealed: neither the user name nor the address is in the row
    const raw = rows.map.get("live.sessions.a")?.toString() ?? "";
    assert.ok(raw.length > 0 && !raw.includes("sam") && !raw.includes("10.0.0.7"), raw);
  });

  test("unchanged lists are not rewritten until the heartbeat; a change is", async () => {
    const before = rows.writes;
    now += 5000;
    await a.publish();
    assert.equal(rows.writes, before, "unchanged, heartbeat not due");
    live.a = [];
    await a.publish();
    assert.equal(rows.writes, before + 1);
    assert.deepEqual(
      (await b.list()).filter((s) => s.node === "a"),
      [],
    );
    now += 25_000;
    await a.publish();
    assert.equal(rows.writes, before + 2, "heartbeat");
  });

  test("a dead node's row is swept once expired; a row under another key at once", async () => {
    live.a = [sam];
    await a.publish();
    const stranger = board("c", randomBytes(32));
    live.c = [{ ...sam, sessionId: "s-3" }];
    await stranger.publish();
    assert.deepEqual((await b.list()).map((s) => s.node).sort(), ["a", "b"]);
    assert.ok(!rows.map.has("live.sessions.c"), "unreadable row deleted");
    // node a dies: its row is not rewritten
    now += STALE_MS - 1000;
    assert.ok(
      (await b.list()).some((s) => s.node === "a"),
      "still within its expiry",
    );
    now += 2000;
    assert.deepEqual(
      (await b.list()).map((s) => s.node),
      ["b"],
    );
    assert.ok(!rows.map.has("live.sessions.a"), "the dead node's row is deleted");
  });

  test("ending a user's sessions through b ends them on a; a later login there stays; the cut-off goes", async () => {
    live.a = [
      { ...sam, since: now - 1000 },
      { sessionId: "s-4", user: "tom", protocol: "sftp", since: now - 1000 },
    ];
    await b.endEverywhere("sam");
    assert.deepEqual(ended.at(-1), ["b", "sam", now]);
    const keys = [...rows.map.keys()].filter((k) => k.startsWith("live.sessions.ended."));
    assert.equal(keys.length, 1);
    assert.ok(!keys[0]?.includes("sam"), "the user name is a keyed tag in the row key");
    now += 1000;
    live.a.push({ ...sam, sessionId: "s-5", since: now }); // logged in again after the cut-off
    await a.applyEnded();
    assert.deepEqual(
      live.a.map((s) => s.sessionId),
      ["s-4", "s-5"],
    );
    // b's listing skips the cut-off rows
    await a.publish();
    assert.ok((await b.list()).every((s) => typeof s.node === "string" && s.node.length === 1));
    now += 5 * 60_000 + 1;
    await a.applyEnded();
    assert.equal([...rows.map.keys()].filter((k) => k.startsWith("live.sessions.ended.")).length, 0);
  });

  test("a clean stop removes the node's row", async () => {
    await b.publish();
    assert.ok(rows.map.has("live.sessions.b"));
    await b.stop();
    assert.ok(!rows.map.has("live.sessions.b"));
  });
});
