// Which user's tree a request works in: the bucket's owner in the global namespace (src/service/s3-buckets.ts). The
// requester's own bucket is served from their own session as ever; another user's bucket from a session of its owner
// opened on the requester's behalf (job user the requester, effective user the owner), and only for what the ACLs
// grant (./acl.ts). An unsigned request has no session of its own.
import { AtrestError } from "../../errors.ts";
import type { S3Buckets } from "../../service/s3-buckets.ts";
import type { VfsSession } from "../../vfs/types.ts";

export interface Placed {
  /** The session the operation runs in; undefined when there is none to give (anonymous, no such bucket). */
  session: VfsSession | undefined;
  owner: string | undefined;
}

async function isBucket(s: VfsSession, bucket: string): Promise<boolean> {
  try {
    return (await s.stat(`/${bucket}`)).kind === "dir";
  } catch (err) {
    if (err instanceof AtrestError && (err.code === "NOT_FOUND" || err.code === "PERMISSION_DENIED")) return false;
    throw err;
  }
}

export async function placeBucket(p: {
  buckets: S3Buckets | undefined;
  bucket: string;
  requester: string;
  own: VfsSession | undefined;
  open: (owner: string) => Promise<VfsSession>;
}): Promise<Placed> {
  const { buckets, bucket, requester, own } = p;
  if (!buckets || !bucket) return { session: own, owner: own ? requester : undefined };
  for (let attempt = 0; attempt < 2; attempt++) {
    const owner = await buckets.owner(bucket);
    if (owner !== undefined && owner === requester) return { session: own, owner };
    if (owner !== undefined) {
      const s = await p.open(owner).catch((err: unknown) => {
        // the owner was removed or disabled: the name's row outlived them
        if (err instanceof AtrestError && (err.code === "NOT_FOUND" || err.code === "PERMISSION_DENIED"))
          return undefined;
        throw err;
      });
      if (s && (await isBucket(s, bucket))) return { session: s, owner };
      await s?.close().catch(() => undefined);
      // the owner's folder is gone (removed over SFTP, or the owner is): the name is free again
      await buckets.release(bucket, owner);
    }
    // a folder of the requester's home that nobody's bucket holds becomes their bucket when they name it
    if (!own || !(await isBucket(own, bucket))) return { session: own, owner: undefined };
    if ((await buckets.claim(bucket, requester)) !== "taken") return { session: own, owner: requester };
  }
  return { session: own, owner: undefined };
}
