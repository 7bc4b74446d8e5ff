// Share links from the client's side (docs/sync-protocol.md §6a): make one for a file version (its own key goes into
// a payload sealed under a fresh link key, which only the URL fragment holds), and fetch one without an account:
// payload opened with the fragment's key, blob hash and size, every segment and the plaintext hash checked before the
// file is renamed into place.
import { createHash, randomUUID } from "node:crypto";
import { open, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { zero } from "../../crypto/bytes.ts";
import { AtrestError, IntegrityError } from "../../errors.ts";
import { b64 } from "../core/canonical.ts";
import { FileDecoder, fileIdOf, fileKeyOf } from "../core/files.ts";
import { linkUrl, newLink, openLink, parseLinkUrl, sealLink } from "../core/links.ts";
import { HttpsClient } from "./api.ts";
import { remoteView } from "./engine.ts";
import type { Session } from "./session.ts";

export async function createShareLink(session: Session, regionId: string, path: string, days: number): Promise<string> {
  if (!Number.isInteger(days) || days < 1 || days > 366)
    throw new AtrestError("INVALID_INPUT", "a link lasts 1..366 days");
  const ctx = await session.region(regionId);
  try {
    const r = remoteView(ctx).byPath.get(path);
    if (r?.entry.kind !== "file") throw new AtrestError("NOT_FOUND", `no file ${path} in the region`);
    const e = r.entry;
    const res = await session.api.getBlob(regionId, e.hash);
    const parts: Buffer[] = [];
    let n = 0;
    for await (const c of res) {
      parts.push(c as Buffer);
      n += (c as Buffer).length;
      if (n >= Math.min(4096, e.blobSize)) break;
    }
    res.destroy();
    const fileId = fileIdOf(regionId, e.id, e.fver);
    const dek = fileKeyOf(Buffer.concat(parts), regionId, fileId, (epoch) => {
      const k = ctx.keys.get(epoch);
      if (!k) throw new AtrestError("KEY_UNAVAILABLE", `no key of epoch ${epoch}`);
      return k;
    });
    const link = newLink();
    try {
      const payload = sealLink(link.key, link.id, {
        v: 1,
        type: "link",
        regionId,
        entryId: e.id,
        fver: e.fver,
        name: r.name,
        size: e.size,
        sha: r.sha,
        blobHash: e.hash,
        blobSize: e.blobSize,
        dek: b64(dek),
      });
      const expiresAt = new Date(Date.now() + days * 86_400_000).toISOString();
      await session.api.createLink(regionId, { id: link.id, blobHash: e.hash, payload, expiresAt });
      return linkUrl(session.device.server, link.id, link.key);
    } finally {
      zero(dek, link.key);
    }
  } finally {
    ctx.close();
  }
}

/** Fetches a link into `out` (a file path; a directory path ending in / takes the file's own name). */
export async function fetchShareLink(url: string, out: string, ca?: string): Promise<{ path: string; size: number }> {
  const { origin, id, key } = parseLinkUrl(url);
  const http = new HttpsClient({ server: origin, ...(ca ? { ca } : {}) });
  try {
    const info = await http.json<{ payload: string; blobHash: string; blobSize: number }>(
      "GET",
      `/api/v1/sync/links/${id}`,
    );
    const p = openLink(key, id, info.payload);
    const dek = Buffer.from(p.dek, "base64url");
    const target = out.endsWith("/") ? join(out, p.name) : out;
    const tmp = join(dirname(target), `.atrest-link-${randomUUID()}.tmp`);
    const fh = await open(tmp, "wx", 0o600);
    try {
      const dec = new FileDecoder(p.blobSize, p.regionId, fileIdOf(p.regionId, p.entryId, p.fver), { dek });
      const res = await http.stream("GET", `/api/v1/sync/links/${id}/blob`);
      const ch = createHash("sha256");
      const ph = createHash("sha256");
      let size = 0;
      for await (const c of res) {
        ch.update(c as Buffer);
        for (const plain of dec.push(c as Buffer)) {
          ph.update(plain);
          size += plain.length;
          await fh.write(plain);
        }
      }
      dec.finish();
      if (ch.digest("hex") !== p.blobHash)
        throw new IntegrityError("the link's blob is not the one its sealed payload names");
      if (size !== p.size || ph.digest("hex") !== p.sha)
        throw new IntegrityError("the link's content differs from its sealed payload");
      await fh.sync();
      await fh.close();
      await rename(tmp, target);
      return { path: target, size };
    } catch (err) {
      await fh.close().catch(() => undefined);
      await rm(tmp, { force: true });
      throw err;
    } finally {
      zero(dek);
    }
  } finally {
    zero(key);
    http.close();
  }
}
