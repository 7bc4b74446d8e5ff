// Uploads in flight in this process: exclusive-create claims on names and quota reservations. Both make refusals
// early (at OPEN or at the WRITE that crosses the limit); the exact decision is taken again at commit, inside the
// store transaction that points the name at the new version (vfs.ts #commit), so uploads of other processes and
// commits that raced past the early check are still held to the limit.
import { AtrestError } from "../errors.ts";

interface Reserved {
  bytes: number;
  files: number;
}

export class Uploads {
  readonly #claims = new Set<string>();
  readonly #reserved = new Map<string, Reserved>();

  /** Claims `name` in `parentId` for an O_EXCL create; EXISTS while another one holds it. Returns the release. */
  claim(parentId: string, name: string): () => void {
    const key = `${parentId}/${name}`;
    if (this.#claims.has(key)) throw new AtrestError("EXISTS", `already exists: ${name} (being created)`);
    this.#claims.add(key);
    let held = true;
    return () => {
      if (held) this.#claims.delete(key);
      held = false;
    };
  }

  /** Bytes and new files reserved by this process's uploads of `userId` in flight. */
  reserved(userId: string): Readonly<Reserved> {
    return this.#reserved.get(userId) ?? { bytes: 0, files: 0 };
  }

  /** Adds to (or with negative deltas takes from) `userId`'s reservation. */
  reserve(userId: string, bytes: number, files: number): void {
    const r = this.#reserved.get(userId) ?? { bytes: 0, files: 0 };
    r.bytes += bytes;
    r.files += files;
    if (r.bytes <= 0 && r.files <= 0) this.#reserved.delete(userId);
    else this.#reserved.set(userId, r);
  }
}
