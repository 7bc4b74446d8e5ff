// The global S3 bucket namespace (docs/s3.md "Buckets and keys"): a bucket name belongs to one user server-wide, as
// in AWS, while the bucket itself stays the folder of that name in its owner's home (SFTP and HTTPS see it there).
// The registry is rows of the metadata store (sql/s3-buckets.ts: name and owner sealed, found by blind index).
// A row is trusted only while its owner's folder exists: a bucket folder removed over SFTP frees its name the next
// time someone asks for it (`release`), and a folder made over SFTP becomes its user's bucket the first time the
// user names it over S3 (`claim`).
import type { Logger } from "../logger.ts";
import type { MetaStore } from "../store/types.ts";
import type { VfsSession } from "../vfs/types.ts";

/** Settings key set once every user's existing top-level folders were registered (the upgrade to the registry). */
const REGISTERED = "s3.buckets.registered";

export type Claim = "created" | "yours" | "taken";

export class S3Buckets {
  readonly #store: MetaStore;
  readonly #now: () => number;

  constructor(store: MetaStore, now: () => number = Date.now) {
    this.#store = store;
    this.#now = now;
  }

  /** The registered owner of `name`, if any (the caller checks that the owner's folder still exists). */
  async owner(name: string): Promise<string | undefined> {
    return (await this.#store.getS3Bucket(name))?.owner;
  }

  /** Registers `name` to `user` unless someone holds it: created, yours (held by `user` already) or taken. */
  async claim(name: string, user: string): Promise<Claim> {
    const created = await this.#store.transaction((tx) =>
      tx.insertS3Bucket({ name, owner: user, createdAt: this.#now() }),
    );
    if (created) return "created";
    return (await this.owner(name)) === user ? "yours" : "taken";
  }

  /** Frees `name` if `owner` holds it (the bucket was deleted, or its folder is gone). */
  async release(name: string, owner: string): Promise<void> {
    await this.#store.transaction((tx) => tx.deleteS3Bucket(name, owner));
  }

  /**
   * Once per store: registers the top-level folders of every user's home as that user's buckets, oldest user first
   * (a name two users have goes to the older account; the other keeps the folder, which S3 then does not show).
   */
  async registerExisting(open: (user: string) => Promise<VfsSession>, logger: Logger): Promise<number> {
    if (await this.#store.getSetting(REGISTERED)) return 0;
    const users = (await this.#store.listUsers()).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    let n = 0;
    for (const u of users) {
      if (u.disabled) continue;
      let s: VfsSession | undefined;
      try {
        s = await open(u.name);
        for (const e of await s.list("/")) {
          if (e.stat.kind === "dir" && (await this.claim(e.name, u.name)) === "created") n++;
        }
      } catch (err) {
        // a home the user may not list: nothing of theirs to register
        logger.warn({ err, user: u.name }, "s3: could not register the user's buckets");
      } finally {
        await s?.close().catch(() => undefined);
      }
    }
    await this.#store.transaction((tx) => tx.setSetting(REGISTERED, Buffer.from("1")));
    return n;
  }
}
