// The MetaStore contract, written against the interface only: every driver runs this file (the SQLite one from
// sqlite.test.ts; a PostgreSQL driver passes its own `open`).
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import {
  KEY_CURSOR_START,
  type KeyCursor,
  type KeyJobRow,
  type MetaStore,
  type MetaTx,
  type NodeRow,
  type UserRow,
} from "../../src/store/types.ts";

export interface ContractDriver {
  name: string;
  /** A fresh, empty, migrated store. */
  open(): Promise<MetaStore>;
  /** A path where a snapshot may be written (a new file). */
  snapshotPath(): Promise<string>;
  /** Opens a store restored from a snapshot file (the driver's install step). */
  restore(snapshot: string): Promise<MetaStore>;
}

export function user(name: string): UserRow {
  return {
    id: randomUUID(),
    name,
    passwordHash: null,
    publicKeys: [],
    home: `/${name}`,
    permissions: { "/": ["list"] },
    groups: [],
    role: "user",
    kek: null,
    quotaBytes: 0,
    quotaFiles: 0,
    usedBytes: 0,
    usedFiles: 0,
    createdAt: new Date().toISOString(),
  };
}

export function fileNode(parentId: string | null, keyRef: string): NodeRow {
  const id = randomUUID();
  return {
    id,
    parentId,
    nameMac: Buffer.from(id),
    nameCt: Buffer.from("ct"),
    kind: "file",
    attrsCt: Buffer.from("attrs"),
    blobId: randomUUID().replaceAll("-", ""),
    contentId: randomUUID(),
    keyRef,
    ownerId: null,
  };
}

export function metaStoreContract(driver: ContractDriver): void {
  describe(`MetaStore contract: ${driver.name}`, () => {
    let store: MetaStore;
    before(async () => {
      store = await driver.open();
    });
    after(() => store.close());

    describe("settings", () => {
      it("lists the settings under a prefix, in key order, and nothing outside it", async () => {
        await store.transaction(async (tx) => {
          for (const k of ["ls.a_2", "ls.a_1", "ls.a%", "ls.ab", "ls.b", "ls", "lsx.a_1"]) {
            await tx.setSetting(k, Buffer.from(`v:${k}`));
          }
        });
        const got = await store.listSettings("ls.a_");
        assert.deepEqual(
          got.map((r) => [r.key, r.value.toString()]),
          [
            ["ls.a_1", "v:ls.a_1"],
            ["ls.a_2", "v:ls.a_2"],
          ],
          "_ and % are not wildcards",
        );
        assert.deepEqual((await store.listSettings("ls.")).length, 5);
        assert.deepEqual(await store.listSettings("nothing."), []);
        await store.transaction(async (tx) => {
          assert.equal((await tx.listSettings("ls.a%")).length, 1);
        });
      });
    });

    describe("transactions", () => {
      it("commits what the handle wrote when the function resolves", async () => {
        const result = await store.transaction(async (tx) => {
          await tx.setSetting("tx.commit", Buffer.from("v"));
          return (await tx.getSetting("tx.commit"))?.toString();
        });
        assert.equal(result, "v");
        assert.equal((await store.getSetting("tx.commit"))?.toString(), "v");
      });

      it("rolls back every write when the function throws, and rethrows", async () => {
        await store.transaction((tx) => tx.insertUser(user("keep")));
        await assert.rejects(
          store.transaction(async (tx) => {
            await tx.setSetting("tx.rollback", Buffer.from("v"));
            await tx.deleteUser("keep");
            await tx.insertUser(user("gone"));
            throw new Error("boom");
          }),
          /boom/,
        );
        assert.equal(await store.getSetting("tx.rollback"), undefined);
        assert.ok(await store.getUser("keep"));
        assert.equal(await store.getUser("gone"), undefined);
      });

      it("a failed statement rolls back the statements before it", async () => {
        const u = user("dup");
        await assert.rejects(
          store.transaction(async (tx) => {
            await tx.setSetting("tx.dup", Buffer.from("v"));
            await tx.insertUser(u);
            await tx.insertUser(u);
          }),
        );
        assert.equal(await store.getSetting("tx.dup"), undefined);
        assert.equal(await store.getUser("dup"), undefined);
      });

      it("refuses a handle used after its transaction ended (committed or rolled back)", async () => {
        let kept: MetaTx | undefined;
        await store.transaction(async (tx) => {
          kept = tx;
        });
        await assert.rejects(async () => kept?.setSetting("tx.late", Buffer.from("v")), /transaction ended/);
        await assert.rejects(async () => kept?.getSetting("tx.late"), /transaction ended/);
        await assert.rejects(
          store.transaction(async (tx) => {
            kept = tx;
            throw new Error("boom");
          }),
        );
        await assert.rejects(async () => kept?.setSetting("tx.late", Buffer.from("v")), /transaction ended/);
        assert.equal(await store.getSetting("tx.late"), undefined);
      });

      it("has no nested transaction: the handle offers no transaction()", async () => {
        await store.transaction(async (tx) => {
          assert.equal((tx as unknown as Record<string, unknown>).transaction, undefined);
        });
      });

      it("serialises concurrent transactions: read-modify-write never loses an update", async () => {
        await store.transaction((tx) => tx.setSetting("tx.counter", Buffer.from("0")));
        await Promise.all(
          Array.from({ length: 20 }, () =>
            store.transaction(async (tx) => {
              const n = Number((await tx.getSetting("tx.counter"))?.toString());
              await new Promise((r) => setImmediate(r));
              await tx.setSetting("tx.counter", Buffer.from(String(n + 1)));
            }),
          ),
        );
        assert.equal((await store.getSetting("tx.counter"))?.toString(), "20");
      });

      it("a failed transaction does not block the next one", async () => {
        await assert.rejects(
          store.transaction(async () => {
            throw new Error("first");
          }),
        );
        await store.transaction((tx) => tx.setSetting("tx.after", Buffer.from("ok")));
        assert.equal((await store.getSetting("tx.after"))?.toString(), "ok");
      });
    });

    describe("api tokens", () => {
      it("keeps a token's hash, scopes and paths; lists by user newest first; updates last use; forgets expired", async () => {
        const row = (id: string, userName: string, createdAt: number) => ({
          id,
          user: userName,
          name: `token ${id}`,
          secretHash: Buffer.alloc(32, id.charCodeAt(0)),
          scopes: ["files:read"],
          paths: ["/reports"],
          createdAt,
          expiresAt: createdAt + 1000,
          lastUsedAt: null,
        });
        await store.transaction(async (tx) => {
          await tx.putApiToken(row("aaaaaaaaaaaaaaaa", "tok-alice", 10));
          await tx.putApiToken(row("bbbbbbbbbbbbbbbb", "tok-alice", 20));
          await tx.putApiToken(row("cccccccccccccccc", "tok-bob", 30));
        });
        const got = await store.getApiToken("aaaaaaaaaaaaaaaa");
        assert.ok(got?.secretHash.equals(Buffer.alloc(32, 97)));
        assert.deepEqual(got?.paths, ["/reports"]);
        assert.deepEqual(
          (await store.listApiTokens("tok-alice")).map((t) => t.id),
          ["bbbbbbbbbbbbbbbb", "aaaaaaaaaaaaaaaa"],
        );
        await store.transaction((tx) =>
          tx.putApiToken({ ...row("aaaaaaaaaaaaaaaa", "tok-alice", 10), lastUsedAt: 15 }),
        );
        assert.equal((await store.getApiToken("aaaaaaaaaaaaaaaa"))?.lastUsedAt, 15);
        assert.equal(await store.transaction((tx) => tx.deleteApiTokensBefore(1015)), 1);
        assert.equal(await store.getApiToken("aaaaaaaaaaaaaaaa"), undefined);
        assert.equal(await store.transaction((tx) => tx.deleteApiToken("cccccccccccccccc")), true);
        assert.equal(await store.transaction((tx) => tx.deleteApiToken("cccccccccccccccc")), false);
      });
    });

    describe("s3 buckets", () => {
      it("holds one owner per bucket name: a second insert changes nothing; only the owner's delete frees it", async () => {
        assert.equal(await store.getS3Bucket("ns-a"), undefined);
        assert.equal(
          await store.transaction((tx) => tx.insertS3Bucket({ name: "ns-a", owner: "ann", createdAt: 5 })),
          true,
        );
        assert.equal(
          await store.transaction((tx) => tx.insertS3Bucket({ name: "ns-a", owner: "ben", createdAt: 6 })),
          false,
        );
        assert.deepEqual(await store.getS3Bucket("ns-a"), { name: "ns-a", owner: "ann", createdAt: 5 });
        assert.equal(await store.getS3Bucket("ns-b"), undefined);
        assert.equal(await store.transaction((tx) => tx.deleteS3Bucket("ns-a", "ben")), false);
        assert.equal(await store.transaction((tx) => tx.deleteS3Bucket("ns-a", "ann")), true);
        assert.equal(await store.getS3Bucket("ns-a"), undefined);
        assert.equal(
          await store.transaction((tx) => tx.insertS3Bucket({ name: "ns-a", owner: "ben", createdAt: 7 })),
          true,
        );
        assert.equal((await store.getS3Bucket("ns-a"))?.owner, "ben");
      });
    });

    describe("trigger queue", () => {
      const at = 1_000_000;
      it("keeps rules: insert, replace (keeps createdAt, clears lastFiredAt), enable, delete", async () => {
        const rule = { name: "r1", spec: "{}", secrets: Buffer.from("s"), enabled: true };
        await store.transaction((tx) => tx.putTriggerRule({ ...rule, createdAt: "t1", updatedAt: "t1" }));
        await store.transaction((tx) => tx.setTriggerRuleFired("r1", at));
        assert.equal((await store.getTriggerRule("r1"))?.lastFiredAt, at);
        await store.transaction((tx) =>
          tx.putTriggerRule({ ...rule, spec: '{"v":2}', createdAt: "t2", updatedAt: "t2" }),
        );
        const got = await store.getTriggerRule("r1");
        assert.deepEqual(
          { ...got, secrets: got?.secrets?.toString() },
          { ...rule, spec: '{"v":2}', secrets: "s", lastFiredAt: null, createdAt: "t1", updatedAt: "t2" },
        );
        assert.equal(await store.transaction((tx) => tx.setTriggerRuleEnabled("r1", false, "t3")), true);
        assert.equal((await store.getTriggerRule("r1"))?.enabled, false);
        assert.equal(await store.transaction((tx) => tx.setTriggerRuleEnabled("nope", false, "t3")), false);
        assert.deepEqual(
          (await store.listTriggerRules()).map((r) => r.name),
          ["r1"],
        );
        assert.equal(await store.transaction((tx) => tx.deleteTriggerRule("r1")), true);
        assert.equal(await store.transaction((tx) => tx.deleteTriggerRule("r1")), false);
      });

      it("claims due executions once, oldest first, and runs them through done, dead, retry and prune", async () => {
        const ids = ["e1", "e2", "e3"];
        await store.transaction(async (tx) => {
          for (const [i, id] of ids.entries()) {
            await tx.insertExecution({ id, rule: "q", data: Buffer.from(id), createdAt: at + i });
          }
        });
        assert.deepEqual(await store.executionCounts(), { pending: 3, running: 0, done: 0, dead: 0 });
        assert.deepEqual(await store.transaction((tx) => tx.claimExecutions(at, 10)).then((r) => r.map((e) => e.id)), [
          "e1",
        ]);
        const claimed = await store.transaction((tx) => tx.claimExecutions(at + 5, 10));
        assert.deepEqual(
          claimed.map((e) => [e.id, e.state, e.step, e.attempts, e.data.toString()]),
          [
            ["e2", "running", 0, 0, "e2"],
            ["e3", "running", 0, 0, "e3"],
          ],
        );
        assert.deepEqual(await store.transaction((tx) => tx.claimExecutions(at + 5, 10)), []);
        assert.equal(await store.transaction((tx) => tx.resetRunningExecutions()), 3);
        const again = await store.transaction((tx) => tx.claimExecutions(at + 5, 2));
        assert.deepEqual(
          again.map((e) => e.id),
          ["e1", "e2"],
        );
        const base = { step: 1, attempts: 1, dueAt: at, data: Buffer.from("x") };
        await store.transaction(async (tx) => {
          await tx.updateExecution({ ...base, id: "e1", state: "done", errorCode: null, updatedAt: at + 10 });
          await tx.updateExecution({ ...base, id: "e2", state: "dead", errorCode: "FAILED", updatedAt: at + 10 });
        });
        const dead = await store.getExecution("e2");
        assert.deepEqual([dead?.state, dead?.errorCode, dead?.step, dead?.data.toString()], ["dead", "FAILED", 1, "x"]);
        assert.deepEqual(
          (await store.deadExecutions(10)).map((e) => e.id),
          ["e2"],
        );
        assert.deepEqual(
          (await store.executionHistory("q", 2)).map((e) => e.id),
          ["e3", "e2"],
        );
        assert.equal(await store.transaction((tx) => tx.retryDeadExecution("e1", at + 20)), false, "done, not dead");
        assert.equal(await store.transaction((tx) => tx.retryDeadExecution("e2", at + 20)), true);
        const retried = await store.getExecution("e2");
        assert.deepEqual(
          [retried?.state, retried?.attempts, retried?.dueAt, retried?.step],
          ["pending", 0, at + 20, 1],
        );
        assert.equal(await store.transaction((tx) => tx.pruneExecutions(at + 10)), 0, "not older than the bound");
        assert.equal(await store.transaction((tx) => tx.pruneExecutions(at + 11)), 1);
        assert.equal(await store.getExecution("e1"), undefined);
        assert.deepEqual(await store.executionCounts(), { pending: 2, running: 0, done: 0, dead: 0 });
      });
    });

    describe("key cursor", () => {
      const refs = ["kek:a:v1", "kek:b:v1", "kek:b:v2", "kek:c:v1"];
      const byRef = new Map<string, string[]>();
      before(async () => {
        await store.transaction(async (tx) => {
          // interleaved inserts: the walk must still group by key_ref
          for (let i = 0; i < 24; i++) {
            const ref = refs[i % refs.length] as string;
            const n = fileNode(null, ref);
            await tx.insertNode(n);
            byRef.set(ref, [...(byRef.get(ref) ?? []), n.id]);
          }
          await tx.insertNode({ ...fileNode(null, "kek:b:v1"), kind: "dir", blobId: null });
        });
      });

      async function walk(from: KeyCursor, range: { from: string; to: string; exclude?: string }, limit: number) {
        const seen: { id: string; keyRef: string | null }[] = [];
        let cursor = from;
        for (;;) {
          const rows = await store.filesByKeyRef(range, cursor, limit);
          if (rows.length === 0) return seen;
          assert.ok(rows.length <= limit);
          for (const r of rows) seen.push({ id: r.node.id, keyRef: r.node.keyRef });
          cursor = (rows[rows.length - 1] as (typeof rows)[number]).cursor;
        }
      }

      it("visits every file in the range once, grouped by key_ref in order, skipping dirs and the excluded ref", async () => {
        const seen = await walk(KEY_CURSOR_START, { from: "kek:b:", to: "kek:b;", exclude: "kek:b:v2" }, 4);
        assert.deepEqual(
          seen.map((s) => s.keyRef),
          Array(6).fill("kek:b:v1"),
        );
        assert.deepEqual(new Set(seen.map((s) => s.id)), new Set(byRef.get("kek:b:v1")));
        const all = await walk(KEY_CURSOR_START, { from: "", to: "\uffff" }, 5);
        assert.equal(all.length, 24);
        assert.equal(new Set(all.map((s) => s.id)).size, 24);
        assert.deepEqual(
          all.map((s) => s.keyRef),
          [...all.map((s) => s.keyRef)].sort(),
        );
      });

      it("resumes from a cursor persisted in a key job, as a restarted process does", async () => {
        const range = { from: "", to: "\uffff" };
        const first = await store.filesByKeyRef(range, KEY_CURSOR_START, 7);
        const job: KeyJobRow = {
          id: randomUUID(),
          kind: "rewrap",
          scope: "key=*",
          state: "running",
          cursor: (first[first.length - 1] as (typeof first)[number]).cursor,
          total: 24,
          done: 7,
          skipped: 0,
          failed: 0,
          bytes: 0,
          startedAt: new Date().toISOString(),
          updatedAt: new Date().toISOString(),
        };
        await store.transaction((tx) => tx.putKeyJob(job));
        const reopened = await store.openKeyJob("rewrap", "key=*");
        assert.ok(reopened);
        const rest = await walk(reopened.cursor, range, 5);
        assert.deepEqual(
          [...first.map((r) => r.node.id), ...rest.map((r) => r.id)],
          (await walk(KEY_CURSOR_START, range, 100)).map((r) => r.id),
        );
      });
    });

    describe("children by name", () => {
      it("lists ids and sealed names only, and reads back just the rows asked for, of that parent", async () => {
        const dir: NodeRow = { ...fileNode(null, "kek:c:v1"), kind: "dir", blobId: null, keyRef: null };
        const parent = dir.id;
        const kids = Array.from({ length: 5 }, (_, i) => ({
          ...fileNode(parent, "kek:c:v1"),
          keyRef: null,
          nameCt: Buffer.from(`ct-${i}`),
        }));
        const stranger = { ...fileNode(null, "kek:c:v1"), keyRef: null };
        await store.transaction(async (tx) => {
          for (const n of [dir, ...kids, stranger]) await tx.insertNode(n);
        });
        const names = await store.listChildNames(parent);
        assert.deepEqual(
          names.map((n) => [n.id, n.nameCt.toString()]).sort(),
          kids.map((n) => [n.id, n.nameCt.toString()]).sort(),
        );
        const [a, b] = kids as [NodeRow, NodeRow];
        const got = await store.getChildren(parent, [a.id, b.id, stranger.id, randomUUID()]);
        assert.deepEqual(got.map((n) => n.id).sort(), [a.id, b.id].sort(), "only this parent's, only existing");
        assert.deepEqual(
          got.find((n) => n.id === a.id),
          a,
        );
        assert.deepEqual(await store.getChildren(parent, []), []);
        assert.deepEqual(await store.listChildNames(randomUUID()), []);
      });

      it("digests the set of a folder's name MACs: an add, a removal or a rename changes it, an attrs change does not", async () => {
        const dir: NodeRow = { ...fileNode(null, "kek:c:v1"), kind: "dir", blobId: null, keyRef: null };
        const kid = (i: number) => ({
          ...fileNode(dir.id, "kek:c:v1"),
          keyRef: null,
          nameMac: Buffer.from(randomUUID().replaceAll("-", ""), "hex"),
          nameCt: Buffer.from(`ct-${i}`),
        });
        const kids = Array.from({ length: 40 }, (_, i) => kid(i));
        await store.transaction(async (tx) => {
          for (const n of [dir, ...kids]) await tx.insertNode(n);
        });
        const seen = new Set<string>();
        const digest = async (what: string) => {
          const d = await store.childNamesDigest(dir.id);
          assert.ok(!seen.has(d), `${what}: digest ${d} seen before`);
          seen.add(d);
          return d;
        };
        const first = await digest("40 children");
        assert.equal(await store.childNamesDigest(dir.id), first, "stable");
        const [a, b] = kids as [NodeRow, NodeRow];
        await store.transaction((tx) => tx.updateNode(a.id, { attrsCt: Buffer.from("new attrs") }));
        assert.equal(await store.childNamesDigest(dir.id), first, "attrs are not names");
        await store.transaction((tx) =>
          tx.updateNode(a.id, { nameMac: Buffer.alloc(32, 1), nameCt: Buffer.from("x") }),
        );
        await digest("renamed");
        await store.transaction((tx) => tx.deleteNode(b.id));
        const removed = await digest("removed");
        const c = kid(99);
        await store.transaction((tx) => tx.insertNode(c));
        await digest("added");
        await store.transaction((tx) => tx.updateNode(c.id, { parentId: null }));
        assert.equal(await store.childNamesDigest(dir.id), removed, "moved out: the same set of names as before");
        assert.match(await store.childNamesDigest(randomUUID()), /^0:/);
      });
    });

    describe("file pieces", () => {
      it("keeps a pieced version's blobs in order, counts them as referenced, forgets them with the version", async () => {
        const version = randomUUID();
        const pieces = Array.from({ length: 3 }, () => ({ blobId: randomUUID(), contentId: randomUUID() }));
        await store.transaction((tx) => tx.insertFilePieces(version, pieces));
        assert.deepEqual(await store.filePieces(version), pieces);
        assert.deepEqual(await store.filePieces(randomUUID()), []);
        const referenced = await store.blobIds();
        for (const p of pieces) assert.ok(referenced.has(p.blobId), "the sweep keeps every piece");
        await assert.rejects(
          store.transaction((tx) => tx.insertFilePieces(randomUUID(), [pieces[0] as (typeof pieces)[0]])),
          "a blob is a piece of one version only",
        );
        await store.transaction((tx) => tx.deleteFilePieces(version));
        assert.deepEqual(await store.filePieces(version), []);
        assert.ok(!(await store.blobIds()).has(pieces[1]?.blobId as string));
      });
    });

    describe("file versions", () => {
      it("keeps versioned folders' states and versions newest first, their blobs referenced until deleted", async () => {
        const dirId = randomUUID();
        await store.transaction((tx) => tx.setVersioning(dirId, "Enabled"));
        assert.equal(await store.getVersioning(dirId), "Enabled");
        await store.transaction((tx) => tx.setVersioning(dirId, "Suspended"));
        assert.equal(await store.getVersioning(dirId), "Suspended");
        assert.ok((await store.listVersionedDirs()).some((d) => d.dirId === dirId && d.state === "Suspended"));
        const keyMac = randomBytes(32);
        const row = (seq: number, marker: boolean) => ({
          id: randomUUID(),
          dirId,
          keyMac,
          keyCt: randomBytes(48),
          versionId: marker ? "null" : `v${seq}`,
          seq,
          marker,
          attrsCt: randomBytes(72),
          blobId: marker ? null : randomUUID(),
          contentId: marker ? null : randomUUID(),
          keyRef: marker ? null : "kek:default:v1",
          ownerId: randomUUID(),
        });
        const rows = [row(1, false), row(2, false), row(3, true)];
        await store.transaction(async (tx) => {
          for (const r of rows) await tx.insertVersion(r);
        });
        assert.deepEqual(await store.listVersions(dirId, keyMac), [...rows].reverse());
        assert.equal((await store.listVersions(dirId)).length, 3);
        assert.deepEqual(await store.getVersion(dirId, keyMac, "v2"), rows[1]);
        assert.equal(await store.getVersion(dirId, randomBytes(32), "v2"), undefined);
        assert.ok(await store.hasVersions(dirId));
        assert.ok((await store.blobIds()).has(rows[0]?.blobId as string), "the sweep keeps a version's blob");
        await assert.rejects(
          store.transaction((tx) => tx.insertVersion({ ...row(4, false), versionId: "v1" })),
          "a version id is a key's once",
        );
        // a kept version's attributes are replaced (its tags changed), nothing else of the row
        const attrsCt = randomBytes(80);
        await store.transaction((tx) => tx.updateVersionAttrs(rows[0]?.id as string, attrsCt));
        assert.deepEqual(await store.getVersion(dirId, keyMac, "v1"), { ...rows[0], attrsCt });
        assert.deepEqual(await store.getVersion(dirId, keyMac, "v2"), rows[1]);
        await store.transaction(async (tx) => {
          for (const r of rows) await tx.deleteVersion(r.id);
          await tx.setVersioning(dirId, undefined);
        });
        assert.ok(!(await store.hasVersions(dirId)));
        assert.ok(!(await store.blobIds()).has(rows[0]?.blobId as string));
        assert.equal(await store.getVersioning(dirId), undefined);
      });

      it("key jobs see kept versions: walked after the nodes, counted, their key ref set only on the same blob", async () => {
        const dirId = randomUUID();
        const ref = (v: number) => `kek:kv:v${v}`;
        const nodesOf = [fileNode(null, ref(1)), fileNode(null, ref(2)), fileNode(null, ref(1))];
        const version = (seq: number, keyRef: string | null) => ({
          id: randomUUID(),
          dirId,
          keyMac: randomBytes(32),
          keyCt: randomBytes(48),
          versionId: `kv${seq}`,
          seq,
          marker: keyRef === null,
          attrsCt: randomBytes(72),
          blobId: keyRef === null ? null : randomUUID(),
          contentId: keyRef === null ? null : randomUUID(),
          keyRef,
          ownerId: null,
        });
        const versions = [version(1, ref(1)), version(2, ref(2)), version(3, null), version(4, ref(1))];
        await store.transaction(async (tx) => {
          for (const n of nodesOf) await tx.insertNode(n);
          for (const v of versions) await tx.insertVersion(v);
        });
        const counts = (await store.keyRefCounts()).filter((c) => c.keyRef?.startsWith("kek:kv:"));
        assert.deepEqual(counts, [
          { keyRef: ref(1), files: 4 },
          { keyRef: ref(2), files: 2 },
        ]);
        const range = { from: "kek:kv:v", to: "kek:kv:w", exclude: ref(2) };
        for (const limit of [1, 2, 3, 100]) {
          const seen: { id: string; version: boolean; parentId: string | null }[] = [];
          let cursor = KEY_CURSOR_START;
          for (;;) {
            const rows = await store.filesByKeyRef(range, cursor, limit);
            if (rows.length === 0) break;
            assert.ok(rows.length <= limit);
            for (const r of rows) seen.push({ id: r.node.id, version: r.version === true, parentId: r.node.parentId });
            cursor = (rows[rows.length - 1] as (typeof rows)[number]).cursor;
          }
          const v1 = versions
            .filter((v) => v.keyRef === ref(1))
            .map((v) => v.id)
            .sort();
          assert.deepEqual(
            seen.filter((s) => !s.version).map((s) => s.id),
            nodesOf.filter((n) => n.keyRef === ref(1)).map((n) => n.id),
            `nodes first (limit ${limit})`,
          );
          assert.deepEqual(
            seen.slice(2).map((s) => s.id),
            v1,
            `then the versions, in id order (limit ${limit})`,
          );
          assert.ok(
            seen.slice(2).every((s) => s.version && s.parentId === dirId),
            "a version's parent is its folder",
          );
        }
        const kept = versions[0] as (typeof versions)[number];
        assert.equal(
          await store.transaction((tx) => tx.updateNodeIfBlob(kept.id, randomUUID(), { keyRef: ref(3) })),
          false,
        );
        assert.equal(
          await store.transaction((tx) => tx.updateNodeIfBlob(kept.id, kept.blobId as string, { keyRef: ref(3) })),
          true,
        );
        assert.equal((await store.getVersion(dirId, kept.keyMac, kept.versionId))?.keyRef, ref(3));
        await store.transaction(async (tx) => {
          for (const v of versions) await tx.deleteVersion(v.id);
          for (const n of nodesOf) await tx.deleteNode(n.id);
        });
      });
    });

    describe("snapshot", () => {
      it("copies the committed state, with a concurrent transaction wholly in or wholly out", async () => {
        await store.transaction(async (tx) => {
          await tx.insertUser(user("snap"));
          await tx.setSetting("snap.a", Buffer.from("a"));
        });
        let release = () => {};
        const gate = new Promise<void>((r) => {
          release = r;
        });
        const pending = store.transaction(async (tx) => {
          await tx.setSetting("snap.b1", Buffer.from("b"));
          await gate;
          await tx.setSetting("snap.b2", Buffer.from("b"));
        });
        const dest = await driver.snapshotPath();
        const taken = store.snapshot(dest);
        release();
        await Promise.all([pending, taken]);
        await store.transaction((tx) => tx.setSetting("snap.after", Buffer.from("c")));
        const copy = await driver.restore(dest);
        try {
          assert.equal((await copy.getUser("snap"))?.home, "/snap");
          assert.equal((await copy.getSetting("snap.a"))?.toString(), "a");
          const b1 = await copy.getSetting("snap.b1");
          const b2 = await copy.getSetting("snap.b2");
          assert.equal(b1 === undefined, b2 === undefined, "a transaction is in a snapshot wholly or not at all");
          assert.equal(await copy.getSetting("snap.after"), undefined);
          await copy.transaction((tx) => tx.setSetting("snap.copy", Buffer.from("d")));
          assert.equal(await store.getSetting("snap.copy"), undefined, "the copy is independent");
        } finally {
          await copy.close();
        }
      });
    });
  });
}
