// The MetaStore contract, written against the interface only: every driver runs this file (the SQLite one from
// sqlite.test.ts; a PostgreSQL driver passes its own `open`).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { MetaStore, MetaTx, NodeRow, UserRow } from "../../src/store/types.ts";

export interface ContractDriver {
  name: string;
  /** A fresh, empty, migrated store. */
  open(): Promise<MetaStore>;
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
  });
}
